// Command weir-kfake runs franz-go's kfake, an in-memory Kafka-protocol broker, as one
// broker on 127.0.0.1 for weir's demo (`weir broker kfake start`, `weir demo --broker kfake`).
//
// It listens on -port (0: any free port), prints "listening on 127.0.0.1:PORT" once it
// accepts connections, and on SIGTERM or SIGINT closes the cluster and exits 0. Everything
// it holds is lost when it stops. `-version` prints the kfake module version and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

const kfakeModule = "github.com/twmb/franz-go/pkg/kfake"

func kfakeVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == kfakeModule {
			return dep.Version
		}
	}
	return "unknown"
}

type topicsFlag []string

func (t *topicsFlag) String() string { return strings.Join(*t, ",") }

func (t *topicsFlag) Set(s string) error {
	*t = append(*t, s)
	return nil
}

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	partitions := flag.Int("partitions", 1, "partitions of each -topic and of auto-created topics")
	clusterID := flag.String("cluster-id", "weir", "cluster id in metadata responses")
	autoCreate := flag.Bool("auto-create-topics", true, "create a topic on first metadata request, as Kafka's auto.create.topics.enable")
	version := flag.Bool("version", false, "print the kfake module version and exit")
	var topics topicsFlag
	flag.Var(&topics, "topic", "a topic to create at start (repeatable)")
	flag.Parse()

	if *version {
		fmt.Println("kfake " + kfakeVersion())
		return
	}
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(os.Stderr, "weir-kfake: bad -port %d: expected 0-65535\n", *port)
		os.Exit(2)
	}
	if *partitions < 1 {
		fmt.Fprintf(os.Stderr, "weir-kfake: bad -partitions %d: expected 1 or more\n", *partitions)
		os.Exit(2)
	}

	opts := []kfake.Opt{
		kfake.Ports(*port),
		kfake.ClusterID(*clusterID),
		kfake.DefaultNumPartitions(*partitions),
	}
	if *autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), topics...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "weir-kfake: cannot start: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", cluster.ListenAddrs()[0])
	<-ctx.Done()
	cluster.Close()
	fmt.Println("stopped")
}
