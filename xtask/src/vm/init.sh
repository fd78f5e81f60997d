#!/bin/busybox sh
# The test VM's /init (PID 1), written by xtask/src/vm. Stage 1 copies the initramfs to a
# tmpfs and switch_roots into it (runc's pivot_root fails on the initramfs root); stage 2
# mounts the kernel filesystems, loads modules, enables cgroup controllers and runs
# /rein/cmd. The host reads the markers `REIN-VM-READY` and `REIN-VM-EXIT <status>`.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox

if [ ! -e /.rein-stage2 ]; then
    $bb mkdir -p /proc /sys /dev /newroot
    $bb mount -t tmpfs -o mode=0755 tmpfs /newroot
    for d in /*; do
        case "$d" in /proc|/sys|/dev|/newroot) ;; *) $bb cp -a "$d" /newroot/ ;; esac
    done
    $bb mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/run
    $bb touch /newroot/.rein-stage2
    exec $bb switch_root /newroot /init
    echo "REIN-VM: switch_root failed"
fi

$bb --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname rein-vm
ip link set lo up

for m in $(cat /lib/modules/rein/load-order); do
    insmod "/lib/modules/rein/$m" || echo "REIN-VM: insmod $m failed"
done
# The container engines' disk (xtask/src/vm/engines.rs), laid under /usr and /etc.
if [ -b /dev/vdc ]; then
    mkdir -p /opt/engines && mount -o ro /dev/vdc /opt/engines
    for d in usr etc; do
        mkdir -p /run/overlay/$d/up /run/overlay/$d/work
        mount -t overlay overlay \
            -o lowerdir=/$d:/opt/engines/$d,upperdir=/run/overlay/$d/up,workdir=/run/overlay/$d/work \
            /$d || echo "REIN-VM: overlaying the engines' /$d failed"
    done
fi
echo "+cpu +memory +io +pids +cpuset" > /sys/fs/cgroup/cgroup.subtree_control \
    || echo "REIN-VM: enabling cgroup controllers failed"

export REIN_VM=1 HOME=/root
mkdir -p /root
echo "REIN-VM-READY $(uname -r)"
cd /rein
sh /rein/cmd
echo "REIN-VM-EXIT $?"
sync
poweroff -f
