#!/bin/sh
# PID 1 of virtsnap's Linux test guest (busybox ash), packed into the
# initramfs as /init by `cargo xtask testvm build`. This file is an input of
# the guest's cache key (testvm::recipe): changing it makes the next build
# produce a new guest, and makes TestVm refuse the old one.
#
# In order, it:
#   1. mounts /proc, /sys, /dev, /run, /tmp and loads the virtio, loop and
#      device-mapper modules (btrfs loads on first mount: preloading it
#      costs ~1 s of raid6 benchmarks under TCG);
#   2. names the virtio-serial ports (/dev/virtio-ports/NAME) and the disks
#      (/dev/disk/by-id/virtio-SERIAL) as udev would; there is no udev;
#   3. starts qemu-guest-agent on the port org.qemu.guest_agent.0;
#   4. unpacks the payload disk (serial "payload", a plain tar archive used
#      as a raw disk) to /payload;
#   5. prints "TESTVM-READY uptime=SECONDS" on the console (ttyS0);
#   6. serves commands on the port testvm.shell until powered off.
#
# Command protocol, one line each way (host side: testvm::TestVm::run):
#   host  -> guest:  ID BASE64(script)
#   guest -> host:   R ID RC BASE64(stdout) BASE64(stderr)
# The script runs with sh in /root, stdin from /dev/null. The host numbers
# its requests, so it can drop the late answer of a command it stopped
# waiting for. The host keeps its connection for the guest's life: once it
# has sent a command, its disconnection means its process died without
# killing QEMU, and the guest powers off (QEMU exits with it). The server
# may then be blocked writing an answer nobody reads, so a watchdog polls
# virtio_console's host_connected state in debugfs.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

say() { echo "testvm: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm /dev/virtio-ports /dev/disk/by-id \
         /run/lock/lvm /run/lvm /run/testvm /payload /root
mount -t devpts devpts /dev/pts
mount -t debugfs debugfs /sys/kernel/debug
ln -sf /proc/self/fd /dev/fd
echo /sbin/modprobe > /proc/sys/kernel/modprobe
# Kernel errors (device-mapper, hung tasks) reach the console log the host
# shows on failure; informational messages stay out of it.
echo 4 > /proc/sys/kernel/printk
hostname testvm

for m in virtio_pci virtio_blk virtio_console virtio_rng loop \
         dm_mod dm_snapshot dm_thin_pool crc32c_intel; do
  modprobe "$m" || say "modprobe $m failed"
done

# virtio-serial ports are announced asynchronously: wait (up to 5 s) for
# the command port, which the host always creates, then name them all.
i=0
while [ $i -lt 100 ]; do
  for p in /sys/class/virtio-ports/*/name; do
    [ -e "$p" ] && [ "$(cat "$p")" = testvm.shell ] && break 2
  done
  sleep 0.05
  i=$((i + 1))
done
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  n=$(cat "$p/name")
  [ -n "$n" ] && ln -sf "/dev/${p##*/}" "/dev/virtio-ports/$n"
done

agent=/dev/virtio-ports/org.qemu.guest_agent.0
if [ -e "$agent" ]; then
  qemu-ga -d -m virtio-serial -p "$agent" -f /run/qemu-ga.pid -t /run \
          -l /run/qemu-ga.log || say "qemu-ga failed to start (see /run/qemu-ga.log)"
fi

for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  d=${b##*/}
  s=$(cat "$b/serial" 2>/dev/null)
  [ -n "$s" ] || continue
  ln -sf "/dev/$d" "/dev/disk/by-id/virtio-$s"
  if [ "$s" = payload ]; then
    tar -xf "/dev/$d" -C /payload || say "unpacking the payload disk /dev/$d failed"
  fi
done

echo "TESTVM-READY uptime=$(cut -d' ' -f1 /proc/uptime)"

# Runs one request line ("ID BASE64") and answers on fd 3.
answer() {
  id=${1%% *}
  if printf '%s' "${1#* }" | base64 -d > /run/testvm/cmd.sh 2> /run/testvm/err; then
    # fd 3 is closed for the script: LVM warns about every inherited fd.
    ( cd /root && exec sh /run/testvm/cmd.sh ) \
      < /dev/null > /run/testvm/out 2> /run/testvm/err 3>&-
    rc=$?
  else
    : > /run/testvm/out
    rc=255
  fi
  printf 'R %s %s %s %s\n' "$id" "$rc" \
    "$(base64 -w 0 /run/testvm/out)" "$(base64 -w 0 /run/testvm/err)" >&3
}

host_gone() {
  say "the host closed the command port: powering off"
  sync
  poweroff -f
}

# Every second, once a host has been served: is it still connected?
watch_host() {
  while sleep 1; do
    [ -e /run/testvm/served ] || continue
    while IFS= read -r field; do
      [ "$field" = "host_connected: 0" ] && host_gone
    done < "$1"
  done
}

port=/dev/virtio-ports/testvm.shell
if [ ! -e "$port" ]; then
  say "no virtio-serial port named testvm.shell: no commands can be served"
else
  state=/sys/kernel/debug/virtio-ports/$(readlink "$port" | sed 's#.*/##')
  if [ -r "$state" ]; then
    watch_host "$state" &
  else
    say "no $state: a guest whose host dies stays up until QEMU is killed"
  fi
  while :; do
    # A brace group, not `exec 3<>`: a failed redirection of exec would end
    # PID 1, and the kernel with it.
    { while IFS= read -r line <&3; do
        [ -e /run/testvm/served ] || : > /run/testvm/served
        answer "$line"
      done; } 3<> "$port"
    [ -e /run/testvm/served ] && host_gone
    sleep 0.1  # no host connected yet: reads give EOF, so poll
  done
fi
while :; do sleep 3600; done
