package streams

import (
	"fmt"
	"strconv"
	"strings"
)

// Position is how far a consumer of the log has come: every message up to
// and including stream sequence Seq has taken effect, and Revision is the
// last source revision of generation Generation of cluster ClusterID whose
// effect is complete. Part is the last part index of that revision's record
// (0 for single-part records). The zero Position means "nothing consumed".
type Position struct {
	ClusterID  uint64
	Generation uint64
	Revision   int64
	Part       int
	Seq        uint64
}

// IsZero reports whether p is the zero Position.
func (p Position) IsZero() bool { return p == Position{} }

// String formats p as "<cluster-hex>:<generation>:<revision>:<part>@<seq>",
// the form ParsePosition reads.
func (p Position) String() string {
	return fmt.Sprintf("%x:%d:%d:%d@%d", p.ClusterID, p.Generation, p.Revision, p.Part, p.Seq)
}

// Less orders positions by generation, revision and part, then by stream
// sequence. Positions of different clusters are ordered the same way; a new
// cluster always starts a new generation.
func (p Position) Less(q Position) bool {
	if p.Generation != q.Generation {
		return p.Generation < q.Generation
	}
	if p.Revision != q.Revision {
		return p.Revision < q.Revision
	}
	if p.Part != q.Part {
		return p.Part < q.Part
	}
	return p.Seq < q.Seq
}

// ParsePosition parses the String form of a Position.
func ParsePosition(s string) (Position, error) {
	var p Position
	body, seq, ok := strings.Cut(s, "@")
	if !ok {
		return p, fmt.Errorf("parse position %q: missing @<seq>", s)
	}
	f := strings.Split(body, ":")
	if len(f) != 4 {
		return p, fmt.Errorf("parse position %q: want <cluster>:<generation>:<revision>:<part>@<seq>", s)
	}
	var err error
	if p.ClusterID, err = strconv.ParseUint(f[0], 16, 64); err != nil {
		return p, fmt.Errorf("parse position %q: cluster: %w", s, err)
	}
	if p.Generation, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return p, fmt.Errorf("parse position %q: generation: %w", s, err)
	}
	if p.Revision, err = strconv.ParseInt(f[2], 10, 64); err != nil {
		return p, fmt.Errorf("parse position %q: revision: %w", s, err)
	}
	if p.Part, err = strconv.Atoi(f[3]); err != nil || p.Part < 0 {
		return p, fmt.Errorf("parse position %q: bad part %q", s, f[3])
	}
	if p.Seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return p, fmt.Errorf("parse position %q: seq: %w", s, err)
	}
	return p, nil
}
