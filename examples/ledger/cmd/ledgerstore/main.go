// Command ledgerstore serves the ledger example's fenced store over
// HTTP/JSON (see package ledgerstore for the API): POST /fence, POST
// /charge, GET /audit, GET /log, GET /healthz. It keeps everything in
// memory and is the referee of a run: start it first, stop it last.
//
//	ledgerstore -addr :8080
//	ledgerstore -addr :8080 -unsafe-no-fence   # planted bug: stale writes get through
//
// SIGTERM or SIGINT stops it. Exit codes: 0 stopped by a signal, 1 the
// listener failed, 2 bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tenurehq/tenure/examples/ledger/ledgerstore"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Stderr, signals))
}

func run(args []string, stderr io.Writer, signals <-chan os.Signal) int {
	fs := flag.NewFlagSet("ledgerstore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "`host:port` to serve HTTP on")
	unsafe := fs.Bool("unsafe-no-fence", false, "PLANTED BUG, for tests of the audit: accept stale epochs, duplicates and gaps without checking")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ledgerstore [-addr host:port] [-unsafe-no-fence]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ledgerstore: unexpected argument %q: ledgerstore takes flags only\n", fs.Arg(0))
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "ledgerstore: -log-level %q: want debug, info, warn or error\n", *level)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	store := ledgerstore.New(ledgerstore.Config{UnsafeNoFence: *unsafe, Logger: log})
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "ledgerstore: -addr %s: %v\n", *addr, err)
		return 1
	}
	if *unsafe {
		log.Warn("-unsafe-no-fence: the store accepts every write; the audit will report what stale leaders do")
	}
	log.Info("serving", "addr", lis.Addr().String(), "unsafe_no_fence", *unsafe)
	srv := &http.Server{Handler: store.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		fmt.Fprintf(stderr, "ledgerstore: %v\n", err)
		return 1
	case sig := <-signals:
		log.Info("signal: stopping", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	<-served
	rep := store.Audit()
	log.Info("final audit", "attempts", rep.Attempts, "accepted", rep.Accepted, "ok", rep.OK,
		"stale_accepted", rep.StaleAccepted, "double_leaders", rep.DoubleLeaders, "duplicates", rep.Duplicates, "lost", rep.Lost)
	return 0
}
