// Package logstore is the embedded durable [queue.Store]: the default store
// of a one-process MTA, with no server to run. It keeps the queue in a
// directory as an append-only log with group commit, plus an in-memory
// index of what scheduling needs. It implements [queue.Store],
// [queue.IdempotentStore] and [queue.Notifier], and passes
// queue/queuetest.
//
//	s, err := logstore.Open("/var/spool/mta", nil)
//	if err != nil { ... }
//	defer s.Close()
//	q, err := queue.New(queue.Config{Store: s, Transport: tr, Hostname: "mx.example.com"})
//
// # Files
//
// The directory holds:
//
//   - LOCK: locked with flock(2) while a Store has the directory open, so
//     that two processes never share it ([ErrLocked]).
//   - NNNNNNNN.seg: log segments, numbered in hex, written in order. Each
//     starts with the 8-byte magic "MTAQLOG1" and holds records framed as
//     length (uint32), CRC-32C of the payload (uint32), payload. A payload
//     is a kind byte and its fields: put (a message's complete state,
//     varint-encoded, and its body: the bytes themselves for a body up to
//     Config.LargeBody, the number of its body file, or a reference to the
//     inline body of an earlier put), del (a message is gone: finished or
//     deleted) and idem (an idempotency record kept past its message).
//   - NNNNNNNNNNNNNNNN.body: bodies larger than Config.LargeBody, one file
//     each.
//
// Every mutation (Enqueue, Complete, Release, SetHeld, Reschedule, Delete)
// appends one record carrying the message's whole new state (or del when the
// message is done). One writer goroutine takes every record pending at that
// moment, writes them with one write and makes them durable with one fsync
// (group commit); each call returns only after its record is fsynced. A
// large body is written and fsynced to its own file, and the directory
// synced, before its record is logged. New segments are created, their
// header fsynced and the directory synced before records go in.
//
// # Memory
//
// The index holds, per message, its ID, priority and where its latest
// record and body are, and per delivery its domain (interned), next attempt,
// held/done flags and lease: a few hundred bytes per message, with
// envelopes, recipients, replies and bodies on disk. Claim picks from
// per-domain, per-priority heaps; Get, List and Claim read the message's
// record back (one pread, CRC-checked).
//
// # Leases
//
// Leases are kept in memory only. The store belongs to one process (the
// lock file sees to that), so when the process ends every lease's holder
// has ended too: after a restart every delivery is claimable at once, as an
// expired lease would be. Tokens carry a random per-Store prefix so that a
// token from before a reopen never matches a new lease.
//
// # Recovery
//
// Open replays the segments in order. Each record's length and checksum are
// verified; a put replaces the message's index entry, a del removes it, an
// idem restores an idempotency record. The first bad record (short, wrong
// length or wrong CRC) in the last segment is the tail of a write that a
// crash cut short, which was never acknowledged: the segment is truncated
// there and the truncation fsynced. A bad record anywhere else, a missing
// body file or segment that a live message needs, is corruption: Open fails
// with [ErrCorrupt] rather than drop messages silently. Body files that no
// live message references (an Enqueue that failed or crashed, a removal cut
// short) are deleted.
//
// # Compaction
//
// After each group commit a background goroutine looks at the oldest
// segment. When no live message state, body or idempotency record is in it,
// the file is removed. When it is mostly garbage, or the log is more than
// twice the live data, the live messages in it are copied forward (state and
// body, as new put records, logged and fsynced like any other) before it is
// removed. Only the oldest segment is ever removed, so a del record always
// outlives the records it cancels.
//
// # Failures
//
// A failed write (a full disk) fails the calls whose records were in it;
// the segment is cut back to its last good size, and the store keeps
// working once space is back. A failed fsync leaves the file's state
// unknown: the store then refuses all further writes (reads still work)
// until it is reopened, which recovers from what is on disk.
//
// Power loss is covered by the same argument as a crash: nothing is
// acknowledged before the data and the directory entries it depends on are
// fsynced, and everything after the last fsync is either absent or a torn
// tail that the checksums reject. The package's tests simulate power cuts
// with an [FS] that discards every unsynced write.
package logstore
