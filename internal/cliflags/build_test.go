package cliflags_test

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

type buildError struct {
	err    error
	output []byte
}

func (e *buildError) Error() string { return fmt.Sprintf("%v\n%s", e.err, e.output) }

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
