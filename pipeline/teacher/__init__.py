"""Train the embedded default teachers on Fashion-MNIST (`pipeline teacher train`)."""
