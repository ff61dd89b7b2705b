/*
 * fuzz_reply.c: a libFuzzer target for the reply reader (clang
 * -fsanitize=fuzzer,address,undefined; `make fuzz`). Any input: no crash,
 * no read past it, and an accepted reply meets the protocol's rules.
 */
#include "../sockfactory.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reply r;
	char *copy;

	if (size > SF_MAX_MESSAGE)
		return 0;
	/* An exact-size copy, so that ASan sees any read past the packet. */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (parse_reply(copy, size, &r) == 0) {
		if (r.v != 1 || r.fds < 0 || r.fds > SF_MAX_FDS)
			abort();
		if (r.has_error + r.has_connect + r.has_bind + r.has_status + r.has_upgrade + (r.ok != 0) != 1)
			abort();
		if (r.has_error && r.code[0] == '\0')
			abort();
		if (r.has_bind && !is_secret(r.bind.token))
			abort();
		if (r.has_status && (r.status_len == 0 || r.status[0] != '{'))
			abort();
	}
	free(copy);
	return 0;
}
