# Guest script of `cargo xtask bench shaping` (see xtask/src/bench.rs). A sender in the root
# namespace reaches a "remote" namespace over a veth pair; each shaper limits the root end.
# Every run prints one `BENCH {json}` line through rein-test-helper.
IP=/usr/local/sbin/ip
TC=/usr/local/sbin/tc
R=10.200.0.2
SECS=5
# Sparse-flow samples per run: a ping and a 100-byte request/response every 20 ms, from 1 s
# into the bulk transfer (once it saturates) for 3 s.
SPARSE=150
$IP netns add remote
$IP link add rein-h0 type veth peer name rein-r0 netns remote
$IP addr add 10.200.0.1/24 dev rein-h0 && $IP link set rein-h0 up
$IP -n remote addr add 10.200.0.2/24 dev rein-r0 && $IP -n remote link set rein-r0 up
$IP -n remote link set lo up
$IP netns exec remote iperf3 -s >/dev/null 2>&1 &
$IP netns exec remote iperf3 -s -p 5203 >/dev/null 2>&1 &
$IP netns exec remote rein-test-helper rr-server 5301 3000 &
sleep 1

# client LABEL LIMIT STREAMS [PREFIX...]: iperf3's bulk streams plus two sparse flows of
# the same sender (same container) through the same path: a ping and a request/response
# TCP connection.
client() {
    label=$1; limit=$2; streams=$3; shift 3
    rm -f /tmp/ping.txt /tmp/rr.txt
    "$@" busybox sh -c "iperf3 -c $R -P $streams -t $SECS -J > /tmp/iperf.json & sleep 1; ping -i 0.02 -c $SPARSE $R > /tmp/ping.txt & rein-test-helper rr-client $R 5301 $SPARSE 20 > /tmp/rr.txt; wait"
    rein-test-helper bench-summary "$label" "$limit" "$streams" /tmp/iperf.json /tmp/ping.txt /tmp/rr.txt
}

agent_start() {
    rein agent --egress-dev rein-h0 "$@" 2>/tmp/agent.log &
    AGENT=$!
    i=0; while [ ! -S /run/rein/rein.sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
}
agent_stop() { kill $AGENT; wait $AGENT 2>/dev/null; }

# Unlimited throughput without rein, then with rein's programs attached (no limit).
$TC qdisc replace dev rein-h0 root pfifo_fast
client none 0 1
agent_start
client rein-attached 0 1 rein run --
agent_stop

for rate in 10 100; do
    for streams in 1 8; do
        # TBF as the Kubernetes bandwidth plugin sets it with no burst given.
        $TC qdisc replace dev rein-h0 root tbf rate ${rate}mbit burst 268435455 \
            limit $((rate * 1000000 / 8 * 25 / 1000 + 268435455))
        client tbf-k8s $rate $streams
        # HTB class at the rate, fq_codel leaf.
        $TC qdisc del dev rein-h0 root 2>/dev/null
        $TC qdisc add dev rein-h0 root handle 1: htb default 10
        $TC class add dev rein-h0 parent 1: classid 1:10 htb rate ${rate}mbit ceil ${rate}mbit
        $TC qdisc add dev rein-h0 parent 1:10 fq_codel
        client htb $rate $streams
        $TC qdisc del dev rein-h0 root 2>/dev/null
    done
done

# rein with its defaults; rein with one FIFO per container (as before flow isolation); then
# the same datapath as Cilium configures EDT: one FIFO, no burst, no congestion
# notification, a 2 s horizon.
for mode in rein rein-fifo edt-cilium; do
    case $mode in
        rein) agent_start ;;
        rein-fifo) agent_start --egress-flows fifo ;;
        *) agent_start --egress-flows fifo --egress-burst-ms 0 --egress-mark-ms 60000 --egress-horizon-ms 2000 ;;
    esac
    for rate in 10 100; do
        for streams in 1 8; do
            client $mode $rate $streams rein run --egress ${rate}mbit --
        done
    done
    agent_stop
done

# The fallback where no fq exists: the same program polices with congestion notification.
agent_start --egress-mode police
for rate in 10 100; do
    for streams in 1 8; do
        client rein-police $rate $streams rein run --egress ${rate}mbit --
    done
done
agent_stop

# A forwarded sender, as a container with its own network namespace: eth0 in netns "ctr",
# its veth peer rein-c1 in the root namespace, which routes to the remote namespace. rein
# paces inside the container's namespace, before the crossing; HTB on the host acts after
# it, on rein-h0.
echo 1 > /proc/sys/net/ipv4/ip_forward
$IP netns add ctr
$IP link add rein-c1 type veth peer name eth0 netns ctr
$IP addr add 10.201.0.1/24 dev rein-c1 && $IP link set rein-c1 up
$IP -n ctr addr add 10.201.0.2/24 dev eth0 && $IP -n ctr link set eth0 up
$IP -n ctr link set lo up
$IP -n ctr route add default via 10.201.0.1
$IP -n remote route add 10.201.0.0/24 via 10.200.0.1
for rate in 10 100; do
    for streams in 1 8; do
        $TC qdisc del dev rein-h0 root 2>/dev/null
        $TC qdisc add dev rein-h0 root handle 1: htb default 10
        $TC class add dev rein-h0 parent 1: classid 1:10 htb rate ${rate}mbit ceil ${rate}mbit
        $TC qdisc add dev rein-h0 parent 1:10 fq_codel
        client htb-fwd $rate $streams $IP netns exec ctr
        $TC qdisc del dev rein-h0 root 2>/dev/null
    done
done
agent_start
for rate in 10 100; do
    for streams in 1 8; do
        client rein-netns $rate $streams rein run --egress ${rate}mbit -- $IP netns exec ctr
    done
done
agent_stop
echo 0 > /proc/sys/net/ipv4/ip_forward

# Priority across containers: two containers without egress limits, 4 streams each,
# saturate one 100 Mbit/s bottleneck (an HTB class on rein-h0 with fq under it, where fq has
# priority bands since 6.7), each with a ping; first both `--priority normal`, then one
# `critical` and one `low`. The agent polices (no egress limit here) and leaves the qdisc.
$TC qdisc del dev rein-h0 root 2>/dev/null
$TC qdisc add dev rein-h0 root handle 1: htb default 10
$TC class add dev rein-h0 parent 1: classid 1:10 htb rate 100mbit ceil 100mbit
$TC qdisc add dev rein-h0 parent 1:10 handle 10: fq
agent_start --egress-mode police
for pair in normal:normal critical:low; do
    a=${pair%:*}; b=${pair#*:}
    rein run --priority $a -- busybox sh -c "iperf3 -c $R -P 4 -t $SECS -J > /tmp/pa.json & sleep 1; ping -i 0.02 -c $SPARSE $R > /tmp/pa-ping.txt; wait" &
    A=$!
    rein run --priority $b -- busybox sh -c "iperf3 -c $R -p 5203 -P 4 -t $SECS -J > /tmp/pb.json & sleep 1; ping -i 0.02 -c $SPARSE $R > /tmp/pb-ping.txt; wait"
    wait $A
    rein-test-helper bench-summary "prio-$a" 100 4 /tmp/pa.json /tmp/pa-ping.txt
    rein-test-helper bench-summary "prio-$b" 100 4 /tmp/pb.json /tmp/pb-ping.txt
done
agent_stop
$TC -s qdisc show dev rein-h0 | grep -A3 'qdisc fq' | sed 's/^/FQ /'
rein check | grep 'bpf test run' | sed 's/^/BPFCOST /'
