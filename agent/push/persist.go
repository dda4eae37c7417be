package push

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"

	resourcepb "github.com/talos-lb/talos-lb/api/resource/v1alpha1"
)

// StateFile is the file under the state directory that keeps the last
// accepted state (a NodeDesiredState in protobuf wire format). It holds the
// BGP passwords too, so it is private like the password files.
const StateFile = "pushed-state.pb"

func statePath(dir string) string {
	return filepath.Join(dir, StateFile)
}

// save keeps s atomically: a crash leaves the previous or the new state.
func save(dir string, s *resourcepb.NodeDesiredState, sync bool) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding pushed state: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}

	if err := writeAtomic(statePath(dir), data, sync); err != nil {
		return fmt.Errorf("writing %s: %w", statePath(dir), err)
	}

	return nil
}

// load reads the kept state and when it was written; nil without error when there is none.
func load(dir string) (*resourcepb.NodeDesiredState, time.Time, error) {
	path := statePath(dir)

	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, nil
	}

	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading %s: %w", path, err)
	}

	info, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading %s: %w", path, err)
	}

	s := &resourcepb.NodeDesiredState{}
	if err := proto.Unmarshal(data, s); err != nil {
		return nil, time.Time{}, fmt.Errorf("%s is corrupt: %w", path, err)
	}

	if s.GetGeneration() == 0 {
		return nil, time.Time{}, fmt.Errorf("%s is corrupt: it holds no generation", path)
	}

	return s, info.ModTime(), nil
}
