package streams

import (
	"encoding/json"
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

// positionJSON is Position's JSON form: snake_case, and the 64-bit
// identifiers as strings (generations are nanosecond timestamps, above
// the 2^53 a JSON number keeps exactly in most readers): the cluster ID in
// hex, as String and the logs print it, the generation in decimal.
type positionJSON struct {
	ClusterID  string `json:"cluster_id"`
	Generation string `json:"generation"`
	Revision   int64  `json:"revision"`
	Part       int    `json:"part"`
	Seq        uint64 `json:"seq"`
}

// legacyPositionJSON is the form checkpoints written before positionJSON
// hold (Go field names, numbers).
type legacyPositionJSON struct {
	ClusterID  uint64
	Generation uint64
	Revision   int64
	Part       int
	Seq        uint64
}

// MarshalJSON encodes p as positionJSON.
func (p Position) MarshalJSON() ([]byte, error) {
	return json.Marshal(positionJSON{ClusterID: strconv.FormatUint(p.ClusterID, 16), Generation: strconv.FormatUint(p.Generation, 10),
		Revision: p.Revision, Part: p.Part, Seq: p.Seq})
}

// UnmarshalJSON decodes positionJSON, or the legacy form of checkpoints
// written by an earlier etcdsync.
func (p *Position) UnmarshalJSON(b []byte) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("position: %w", err)
	}
	if _, ok := probe["cluster_id"]; !ok {
		var l legacyPositionJSON
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("position: %w", err)
		}
		*p = Position(l)
		return nil
	}
	var j positionJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("position: %w", err)
	}
	var q Position
	var err error
	if j.ClusterID != "" {
		if q.ClusterID, err = strconv.ParseUint(j.ClusterID, 16, 64); err != nil {
			return fmt.Errorf("position: cluster_id %q: %w", j.ClusterID, err)
		}
	}
	if j.Generation != "" {
		if q.Generation, err = strconv.ParseUint(j.Generation, 10, 64); err != nil {
			return fmt.Errorf("position: generation %q: %w", j.Generation, err)
		}
	}
	q.Revision, q.Part, q.Seq = j.Revision, j.Part, j.Seq
	*p = q
	return nil
}
