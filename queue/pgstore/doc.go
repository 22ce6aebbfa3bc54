// Package pgstore is a [queue.Store] on PostgreSQL, for an MTA that runs
// as several nodes on the same queue (it also suits one node that should
// keep its queue in a database it already backs up).
//
// Open connects with pgx, creates the schema given in Config.Schema and
// migrates it (the SQL is embedded, in migrations/). Messages, their
// per-domain deliveries and recipients are rows; bodies are stored in
// chunks of Config.ChunkSize and streamed both ways, so no body has to
// fit in memory.
//
// Several processes share the store safely:
//
//   - Claim picks ready deliveries with SELECT ... FOR UPDATE SKIP LOCKED,
//     in priority and due-time order, and marks each with a lease (owner,
//     token, expiry). A node that dies leaves leases that expire, after
//     which any node claims the delivery again; a node whose lease expired
//     can no longer complete it (the token no longer matches), so a
//     recipient is never recorded twice.
//   - Complete writes every recipient's outcome and the reschedule in one
//     transaction.
//   - Enqueue and every change that makes work ready send NOTIFY on the
//     schema's channel; each store LISTENs on a dedicated connection and
//     wakes its queue through Ready (queue.Notifier), falling back to
//     polling while that connection is being re-established.
//   - Idempotency keys are rows with a unique constraint, so a retried
//     Enqueue on any node returns the first message's ID.
//
// Every method is durable on return: it returns after PostgreSQL committed
// the transaction (with the server's synchronous_commit, on by default).
// The tests need MTA_TEST_POSTGRES, a connection string such as
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable, and skip
// without it.
package pgstore
