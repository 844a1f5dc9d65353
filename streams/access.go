package streams

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// Role is what a NATS identity may do with the log of one site. The same
// permissions are served by the embedded server and written in the NATS
// values of deploy/ for a real cluster.
type Role string

const (
	// RolePublisher may append to the log (etcdsync.<site>.log.>), create
	// the log stream and the drift stream, and answer snapshot requests. It
	// cannot publish drift events, nor change a stream's configuration (a
	// RePublish into the drift subjects, a purge by limits): that is
	// `etcdsync streams init`'s, run with an admin identity.
	RolePublisher Role = "publisher"
	// RoleReader (appliers, auditors, status, promote of an embedded log)
	// may read the log and the drift stream, create and delete consumers of
	// the log, ask the publisher for a snapshot and publish drift events. It
	// can neither publish to the log, nor create or change any stream, nor
	// create consumers of other streams (a push consumer could deliver
	// messages onto the log's subjects).
	RoleReader Role = "reader"
	// RoleLeaf is the other site's NATS server connecting as a leafnode: it
	// may mirror the log (create a consumer of it through the JetStream API
	// of Domain and receive its deliveries) and carry its appliers'
	// snapshot requests to the publisher and the replies back, and nothing
	// else; it cannot publish to the log nor manage any stream.
	RoleLeaf Role = "leaf"
)

// ParseRole returns the role named s: publisher, reader or leaf.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RolePublisher, RoleReader, RoleLeaf:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want publisher, reader or leaf", s)
}

// Access names what the permissions of a Role cover: the log stream of
// one site and its drift stream. Domain is the JetStream domain a leafnode
// reaches this server's API through (empty: none).
type Access struct {
	Site        string
	Stream      string
	DriftStream string
	Domain      string
}

// DefaultAccess returns the names the components use by default.
func DefaultAccess() Access {
	return Access{Site: DefaultSite, Stream: DefaultStream, DriftStream: DefaultDriftStream}
}

// Validate reports whether the names can be used in subjects.
func (a Access) Validate() error {
	if err := ValidateSite(a.Site); err != nil {
		return err
	}
	if err := ValidateStreamName(a.Stream); err != nil {
		return err
	}
	if err := ValidateStreamName(a.DriftStream); err != nil {
		return err
	}
	if a.Domain != "" && !tokenRE.MatchString(a.Domain) {
		return fmt.Errorf("domain %q: must contain only letters, digits, '-' and '_'", a.Domain)
	}
	return nil
}

// jsAPI is the prefix of the JetStream API subjects of clients.
const jsAPI = "$JS.API."

// streamRead are the API subjects that read one stream's state and messages.
func streamRead(api, name string) []string {
	return []string{
		api + "STREAM.INFO." + name,
		api + "STREAM.MSG.GET." + name,
		api + "DIRECT.GET." + name,
		api + "DIRECT.GET." + name + ".>",
	}
}

// consumerOwn are the API subjects that create, read from and delete
// consumers of one stream.
func consumerOwn(api, name string) []string {
	return []string{
		api + "CONSUMER.CREATE." + name,
		api + "CONSUMER.CREATE." + name + ".>",
		api + "CONSUMER.INFO." + name + ".>",
		api + "CONSUMER.MSG.NEXT." + name + ".>",
		api + "CONSUMER.DELETE." + name + ".>",
	}
}

// Permissions returns the NATS permissions of role: publish and subscribe
// allow lists (everything else is denied) and, for the publisher, replies
// to the requests it receives.
func (a Access) Permissions(role Role) *server.Permissions {
	subj := Subjects{Site: a.Site}
	switch role {
	case RolePublisher:
		pub := []string{subj.LogWildcard(), jsAPI + "INFO",
			jsAPI + "STREAM.CREATE." + a.Stream,
			jsAPI + "STREAM.CREATE." + a.DriftStream, jsAPI + "STREAM.INFO." + a.DriftStream}
		pub = append(pub, streamRead(jsAPI, a.Stream)...)
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "etcdsync." + a.Site + ".control.>"}},
			Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION},
		}
	case RoleReader:
		pub := []string{jsAPI + "INFO", subj.ControlSnapshot(), subj.Drift(), subj.Drift() + ".>"}
		pub = append(pub, streamRead(jsAPI, a.Stream)...)
		pub = append(pub, consumerOwn(jsAPI, a.Stream)...)
		pub = append(pub, streamRead(jsAPI, a.DriftStream)...)
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub, Deny: []string{subj.LogWildcard()}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}
	case RoleLeaf:
		// On the hub's end of a leafnode connection the server checks the
		// messages it accepts from the other server, and which of its own
		// interest it announces to it, against "publish"; the messages it
		// delivers to the other server, and the other server's interest,
		// against "subscribe". A mirror needs, both ways: create its
		// consumer (through the domain's API), the API's reply ($JSC.R),
		// the deliveries ($JS.M) and flow control ($JS.FC).
		api := jsAPI
		if a.Domain != "" {
			api = "$JS." + a.Domain + ".API."
		}
		link := []string{api + "CONSUMER.CREATE." + a.Stream, api + "CONSUMER.CREATE." + a.Stream + ".>", "$JSC.R.>", "$JS.M.>", "$JS.FC.>"}
		// An applier of the other site that needs a snapshot asks this
		// site's publisher on its control subject, with nats.go's default
		// request inbox: the reply goes to _INBOX.<connection id>.<token>,
		// a prefix the publisher cannot narrow and the applier does not
		// choose. So the request crosses one way only (publish), and the
		// replies the other way only (subscribe), as _INBOX.*.*: exactly
		// the request-reply inboxes, not the two-token _INBOX.<id> on which
		// this site's consumers receive the log and drift messages they
		// fetch. The other server can then never publish into a client's
		// inbox here (a forged publish acknowledgement, a forged API
		// reply), and what it can receive is replies to requests made here
		// (API answers, acknowledgements), which hold no secret: log
		// messages its mirror holds anyway, stream and consumer state.
		send := append(link[:len(link):len(link)], subj.ControlSnapshot())
		receive := append(link[:len(link):len(link)], "_INBOX.*.*")
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: send, Deny: []string{subj.LogWildcard()}},
			Subscribe: &server.SubjectPermission{Allow: receive, Deny: []string{subj.LogWildcard()}},
		}
	}
	return &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{">"}}, Subscribe: &server.SubjectPermission{Deny: []string{">"}}}
}
