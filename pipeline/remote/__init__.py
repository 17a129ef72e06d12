"""Measuring on another machine over SSH: copy the models and the standalone bench script, run it there,
bring one JSON result back (`ssh`/`scp` from OpenSSH, nothing to install on the device but its runtime)."""
