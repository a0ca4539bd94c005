# bench/sshd/lib.sh: what run.sh and flood.sh share. Source it after
# setting W (the scratch directory, removed on exit); add every process
# started to PIDS so that it is stopped on exit.
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for CMD...: a deadline-bounded poll (no event to wait on here).
wait_for() {
	for _ in $(seq 400); do "$@" && return 0; sleep 0.05; done
	echo "timed out waiting for: $*" >&2
	return 1
}

# setup_keys: the client key ($W/id), OpenSSH's host key, an
# authorized_keys with the client key, and the harness's state dir.
setup_keys() {
	ssh-keygen -q -t ed25519 -N '' -f "$W/id"
	ssh-keygen -q -t ed25519 -N '' -f "$W/openssh_host_key"
	cp "$W/id.pub" "$W/authorized_keys"
	chmod 600 "$W/authorized_keys"
	mkdir -p /run/sshd "$W/state"
}

# write_sshd_config [LINE...]: $W/sshd_config, OpenSSH's sshd on
# 127.0.0.1 (the port goes on its command line) with the keys of
# setup_keys and public keys only, then the LINEs.
write_sshd_config() {
	{
		cat <<-CONF
			ListenAddress 127.0.0.1
			HostKey $W/openssh_host_key
			AuthorizedKeysFile $W/authorized_keys
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			StrictModes no
			PidFile none
			PermitRootLogin prohibit-password
		CONF
		printf '%s\n' "$@"
	} >"$W/sshd_config"
}
