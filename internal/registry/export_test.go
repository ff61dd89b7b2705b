package registry

import "os"

// WithoutDescriptors has the registry keep entries whose Create returns a
// nil file with no descriptor (-1) until restore is called: for
// BenchmarkRegistryScale, whose million entries would need a million
// descriptors. A socket so kept must never be handed out.
func WithoutDescriptors() (restore func()) {
	takeDescriptor = func(f *os.File) (int, error) {
		if f == nil {
			return -1, nil
		}
		return takeFD(f)
	}
	return func() { takeDescriptor = takeFD }
}
