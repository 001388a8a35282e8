# Sourced by start.sh and stop.sh: daemons are found by their pid files, never by name.

# pid_of FILE NAME: print the PID in FILE when it is a live (not zombie) process named NAME
pid_of() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc 0-9 < "$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  # a killed daemon may linger as a zombie until init reaps it: that is not alive
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  echo "$pid"
}

# alive FILE NAME: FILE names a live process whose command is NAME
alive() { pid_of "$1" "$2" >/dev/null; }
