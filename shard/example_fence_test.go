package shard_test

import (
	"errors"
	"fmt"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/shard"
)

// A resource checks the token of every write before applying it. Here the
// leader of epoch 7 wrote, lost its lease during a pause, and the new
// leader of epoch 8 wrote before the old one woke up.
func ExampleFence() {
	var f shard.Fence
	fmt.Println(f.Check(lease.Token{Shard: 3, Epoch: 7}))
	fmt.Println(f.Check(lease.Token{Shard: 3, Epoch: 8}))

	err := f.Check(lease.Token{Shard: 3, Epoch: 7})
	fmt.Println(errors.Is(err, shard.ErrStaleEpoch), err)
	fmt.Println(f.Highest(3))
	// Output:
	// <nil>
	// <nil>
	// true shard 3: epoch 7 is below highest 8: stale epoch
	// 8
}

// sqlStatement is what a database-backed resource would hand its driver.
type sqlStatement struct {
	query string
	args  []any
}

// fencedWrite builds the conditional writes that fence a table of account
// balances kept per shard: each row stores the epoch of the last write, and
// a write lands only if its token's epoch is at least that. The check and
// the write are one statement, so the database's atomicity does what
// Fence.Check does in process. Run the update first; if it affects no row,
// the row may not exist yet, so run the insert. If that affects no row
// either, a newer leader has written: treat it as shard.ErrStaleEpoch and
// do not retry.
func fencedWrite(t lease.Token, balance int64) ([]sqlStatement, error) {
	if t.Epoch == 0 {
		// Epoch 0 is never granted; a zero token is a bug in the caller.
		return nil, &shard.StaleTokenError{Shard: t.Shard}
	}
	args := []any{t.Shard, t.Epoch, balance}
	return []sqlStatement{
		{query: `UPDATE accounts SET balance = $3, epoch = $2
 WHERE shard = $1 AND epoch <= $2`, args: args},
		{query: `INSERT INTO accounts (shard, epoch, balance) VALUES ($1, $2, $3)
ON CONFLICT (shard) DO UPDATE SET epoch = EXCLUDED.epoch, balance = EXCLUDED.balance
 WHERE accounts.epoch <= EXCLUDED.epoch`, args: args},
	}, nil
}

// The conditional-write form of the fence, for a resource that is a SQL
// database. With database/sql the caller would run each statement with
// ExecContext and read RowsAffected: 1 means the write landed, 0 means a
// newer leader's write is already there and this one must be dropped as
// shard.ErrStaleEpoch.
func Example_sqlFence() {
	stmts, err := fencedWrite(lease.Token{Shard: 12, Epoch: 41}, 250)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range stmts {
		fmt.Println(s.query)
		fmt.Println("--", s.args)
	}

	_, err = fencedWrite(lease.Token{Shard: 12}, 250)
	fmt.Println(errors.Is(err, shard.ErrStaleEpoch))
	// Output:
	// UPDATE accounts SET balance = $3, epoch = $2
	//  WHERE shard = $1 AND epoch <= $2
	// -- [12 41 250]
	// INSERT INTO accounts (shard, epoch, balance) VALUES ($1, $2, $3)
	// ON CONFLICT (shard) DO UPDATE SET epoch = EXCLUDED.epoch, balance = EXCLUDED.balance
	//  WHERE accounts.epoch <= EXCLUDED.epoch
	// -- [12 41 250]
	// true
}
