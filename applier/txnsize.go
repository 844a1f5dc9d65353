package applier

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrTooLarge means a key operation cannot be written to the standby: even
// alone under the checkpoint compare, its request exceeds the standby's
// request limit. Retrying cannot help; the standby's --max-request-bytes
// must be raised.
var ErrTooLarge = errors.New("operation exceeds the standby's request limit")

// TooLargeError names the operation the standby cannot take.
type TooLargeError struct {
	// Key is the key written ("" for a transaction of several operations).
	Key string
	// Bytes is the size of the request etcd refused.
	Bytes int
	// Limit is the standby's request limit as configured (MaxRequestBytes).
	Limit int
}

func (e *TooLargeError) Error() string {
	what := fmt.Sprintf("key %q: a request of %d bytes (the key alone under the checkpoint compare)", e.Key, e.Bytes)
	fix := "raise the standby etcd's --max-request-bytes (and the applier's) above it"
	if e.Key == "" {
		what = fmt.Sprintf("a transaction of %d bytes", e.Bytes)
		fix = "set the applier's --max-request-bytes to the standby etcd's, or lower --max-txn-bytes"
	}
	if e.Bytes <= e.Limit {
		return fmt.Sprintf("%s was refused by the standby as too large, though the configured request limit is %d bytes: %s", what, e.Limit, fix)
	}
	return fmt.Sprintf("%s exceeds the standby's request limit of %d bytes: %s", what, e.Limit, fix)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// Stop records in the checkpoint why the applier stopped on an error only an
// operator can fix, for status and readiness to report. The next checkpoint
// the applier writes (once the cause is fixed) clears it.
type Stop struct {
	// Reason is the error's text.
	Reason string `json:"reason"`
	// At is when the applier stopped.
	At time.Time `json:"at"`
}

// tooLarge reports whether the standby (or gRPC before it) refused a
// request for its size.
func tooLarge(err error) bool {
	if errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return true
	}
	// A request beyond etcd's limit plus gRPC's allowance never reaches
	// etcd: gRPC refuses it (on either side) as resource exhausted, the
	// code etcd also uses for transient overload and a full database.
	return status.Code(err) == codes.ResourceExhausted &&
		!errors.Is(err, rpctypes.ErrTooManyRequests) && !errors.Is(err, rpctypes.ErrNoSpace)
}

// Request sizes, in bytes of etcd's raft request (what --max-request-bytes
// bounds): the protobuf encoding of an InternalRaftRequest holding a header
// and a TxnRequest. A transaction is the sum of its parts, each a
// length-delimited field.

// varintLen is the size of x as a protobuf varint.
func varintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// fieldLen is the size of a length-delimited field of n bytes with a
// one-byte tag.
func fieldLen(n int) int { return 1 + varintLen(uint64(n)) + n }

// requestHeaderBytes bounds the raft request's header field (tag 100: two
// bytes) holding a request ID of up to ten bytes; the user name and auth
// revision of an etcd with authentication come on top.
var requestHeaderBytes = 2 + varintLen(11) + 1 + varintLen(math.MaxUint64)

// putOpBytes is the size of a put of key and value as one operation of a
// transaction (a RequestOp in TxnRequest.success), with a lease when lease
// is not 0.
func putOpBytes(key, value int, lease int64) int {
	n := fieldLen(key)
	if value > 0 {
		n += fieldLen(value)
	}
	if lease != 0 {
		n += 1 + varintLen(uint64(lease))
	}
	return fieldLen(fieldLen(n))
}

// deleteOpBytes is the size of a single-key delete as one operation.
func deleteOpBytes(key int) int { return fieldLen(fieldLen(fieldLen(key))) }

// compareBytes is the size of the checkpoint compare (mod revision of key
// equal to rev) in a transaction.
func compareBytes(key int, rev int64) int {
	return fieldLen(2 + fieldLen(key) + 1 + varintLen(uint64(rev)))
}

// requestBytes is the size of the raft request of a transaction whose
// compares and operations take txn bytes.
func requestBytes(txn int) int { return requestHeaderBytes + fieldLen(txn) }

// checkpointValueReserve is what the budget sets aside for the checkpoint's
// JSON value: a few hundred bytes, and the keyspace digest's per-resource
// entries, bounded by maxDigestBytes.
const checkpointValueReserve = 1024 + maxDigestBytes

// checkpointReserve is what the checkpoint's compare and put take of a
// transaction with a checkpoint of up to checkpointValueReserve bytes.
func checkpointReserve(key string) int {
	return compareBytes(len(key), math.MaxInt64) + putOpBytes(len(key), checkpointValueReserve, 0)
}

// leaseBound stands for a standby lease not granted yet in a size estimate.
const leaseBound = math.MaxInt64
