"""Hand-off bundles for mobile teams (`pipeline bundle`) and their verification (`pipeline verify`)."""
