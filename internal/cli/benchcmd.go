package cli

func runBench(e *env, args []string) error {
	return usagef("unum bench: not yet implemented")
}
