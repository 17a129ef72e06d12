"""`pipeline gate`: block a latency regression in CI without flaking (A/B interleaved measurement, a bootstrap
confidence interval of the paired median ratio, thresholds, exit codes, JSON and JUnit reports)."""
