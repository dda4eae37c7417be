package lbctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/spf13/cobra"

	"github.com/talos-lb/talos-lb/pkg/client"
)

type getOptions struct {
	output    string
	watch     bool
	namespace string
}

func newGetCmd(g *globals) *cobra.Command {
	var opts getOptions

	cmd := &cobra.Command{
		Use:   "get <type> [<id>]",
		Short: "Show agents' resources (`lbctl get rd` lists the types)",
		Long: `Show resources of the selected agents, like talosctl get.

The type is any name or alias that 'lbctl get rd' lists, e.g. health, nodes,
config, configstatus.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := newPrinter(opts.output, g.out, opts.watch)
			if err != nil {
				return err
			}

			agents, err := g.agents()
			if err != nil {
				return err
			}
			defer closeAll(agents)

			id := ""
			if len(args) == 2 {
				id = args[1]
			}

			if opts.watch {
				return watch(cmd.Context(), agents, args[0], id, opts.namespace, p)
			}

			var errs []error

			for _, a := range agents {
				if err := get(cmd.Context(), a, args[0], id, opts.namespace, p); err != nil {
					errs = append(errs, explain(a.Endpoint, err))
				}
			}

			if err := p.flush(); err != nil {
				errs = append(errs, err)
			}

			return errors.Join(errs...)
		},
	}

	cmd.Flags().StringVarP(&opts.output, "output", "o", "table", "output format: table, yaml or json")
	cmd.Flags().BoolVarP(&opts.watch, "watch", "w", false, "keep printing changes")
	cmd.Flags().StringVar(&opts.namespace, "namespace", "", "resource namespace (default: the type's own)")

	return cmd
}

// resolve finds the resource definition a user's type name means.
func resolve(ctx context.Context, st state.State, name string) (*meta.ResourceDefinition, error) {
	rds, err := safe.StateListAll[*meta.ResourceDefinition](ctx, st)
	if err != nil {
		return nil, fmt.Errorf("listing resource definitions: %w", err)
	}

	want := strings.ToLower(name)

	var known []string

	for rd := range rds.All() {
		spec := rd.TypedSpec()
		if strings.ToLower(spec.Type) == want || slices.Contains(spec.AllAliases, want) {
			return rd, nil
		}

		if len(spec.Aliases) > 0 {
			known = append(known, spec.Aliases[0])
		}
	}

	slices.Sort(known)

	return nil, fmt.Errorf("unknown resource type %q (known: %s; see `lbctl get rd`)", name, strings.Join(known, ", "))
}

func get(ctx context.Context, a *client.Agent, typ, id, namespace string, p printer) error {
	rd, err := resolve(ctx, a.State, typ)
	if err != nil {
		return err
	}

	if namespace == "" {
		namespace = rd.TypedSpec().DefaultNamespace
	}

	spec := rd.TypedSpec()

	if id != "" {
		r, err := a.State.Get(ctx, resource.NewMetadata(namespace, spec.Type, id, resource.VersionUndefined))
		if err != nil {
			if state.IsNotFoundError(err) {
				return fmt.Errorf("%s %q not found in namespace %s", spec.DisplayType, id, namespace)
			}

			return err
		}

		return p.print(a.Endpoint, spec, "", r)
	}

	list, err := a.State.List(ctx, resource.NewMetadata(namespace, spec.Type, "", resource.VersionUndefined))
	if err != nil {
		return err
	}

	for _, r := range list.Items {
		if err := p.print(a.Endpoint, spec, "", r); err != nil {
			return err
		}
	}

	return nil
}

// watch prints every agent's events as they come, until ctx ends or an agent fails.
func watch(ctx context.Context, agents []*client.Agent, typ, id, namespace string, p printer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)

	for _, a := range agents {
		wg.Add(1)

		go func() {
			defer wg.Done()

			if err := watchOne(ctx, a, typ, id, namespace, p, &mu); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, explain(a.Endpoint, err))
				mu.Unlock()
			}
		}()
	}

	wg.Wait()

	return errors.Join(errs...)
}

func watchOne(ctx context.Context, a *client.Agent, typ, id, namespace string, p printer, mu *sync.Mutex) error {
	rd, err := resolve(ctx, a.State, typ)
	if err != nil {
		return err
	}

	spec := rd.TypedSpec()
	if namespace == "" {
		namespace = spec.DefaultNamespace
	}

	events := make(chan state.Event)
	md := resource.NewMetadata(namespace, spec.Type, id, resource.VersionUndefined)

	if id != "" {
		err = a.State.Watch(ctx, md, events)
	} else {
		err = a.State.WatchKind(ctx, md, events, state.WithBootstrapContents(true))
	}

	if err != nil {
		return err
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			var (
				r    resource.Resource
				mark string
			)

			switch ev.Type {
			case state.Created:
				r, mark = ev.Resource, "+"
			case state.Updated:
				r, mark = ev.Resource, "*"
			case state.Destroyed:
				r, mark = ev.Resource, "-"
			case state.Errored:
				return ev.Error
			case state.Bootstrapped, state.Noop:
				continue
			}

			mu.Lock()
			err := p.print(a.Endpoint, spec, mark, r)

			if err == nil {
				err = p.flush()
			}

			mu.Unlock()

			if err != nil {
				return err
			}
		}
	}
}
