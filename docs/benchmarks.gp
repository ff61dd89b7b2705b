# Plots throughput against clients for each mode beside its floor, from the
# JSON report of sockfactory-bench (docs/benchmarks.md):
#
#   gnuplot -e "json='bench.json'; out='docs/benchmarks-throughput.png'" docs/benchmarks.gp
#
# Uses the medians ("summary") when the report has several rounds, else the
# runs themselves; only runs with no extra held sockets. Needs jq.
if (!exists("json")) json = 'bench.json'
if (!exists("out")) out = 'docs/benchmarks-throughput.png'

# One "clients ops/s" line per run of a mode, sorted by clients.
data(m) = sprintf("< jq -r '(if .summary then .summary else .results end)[] | select(.held == 0 and .mode == \"%s\") | \"\\(.clients) \\(.ops_per_sec)\"' %s | sort -n", m, json)

set terminal pngcairo size 1400,560 font "DejaVu Sans,11"
set output out
set multiplot layout 1,2 title "sockfactoryd throughput against clients, beside its floors (medians of the rounds of one run; 2 CPUs)"
set logscale xy
set xlabel "concurrent clients"
set ylabel "operations per second"
set grid xtics ytics mytics
set key top left Left reverse box opaque
set xrange [0.8:700]
set xtics (1, 8, 64, 256, 512)
set format y "%.0f"

# clearwater-peer is drawn when the report has it (-clearwater-peer PATH:
# another Clearwater-protocol daemon, such as the original); without it
# gnuplot warns that the line has no points and draws the others.
set title "Connected sockets: brokered connect vs its floors"
plot data("direct-connect") using 1:2 with linespoints lw 2 pt 7 dt 2 lc rgb "#444444" title "direct connect() by the client", \
     data("connect-floor") using 1:2 with linespoints lw 2 pt 6 dt 3 lc rgb "#000000" title "floor: direct connect + fd pass, 1/(1/a+1/b)", \
     data("connect") using 1:2 with linespoints lw 2 pt 5 lc rgb "#1f77b4" title "connect (native protocol)", \
     data("clearwater") using 1:2 with linespoints lw 2 pt 9 lc rgb "#2ca02c" title "clearwater (new UNIX connection each)", \
     data("clearwater-peer") using 1:2 with linespoints lw 2 pt 11 dt 4 lc rgb "#8c564b" title "clearwater-peer (the daemon given)"

set title "Bound sockets: cached handoff vs the fd-passing floors"
set key bottom right
plot data("fdpass-floor") using 1:2 with linespoints lw 3 pt 7 dt 2 lc rgb "#000000" title "floor: the fastest fd-passing server", \
     data("fdpass-c") using 1:2 with linespoints lw 1 pt 6 dt 3 lc rgb "#444444" title "fdpass-c (C, thread per connection)", \
     data("fdpass-threads") using 1:2 with linespoints lw 1 pt 8 dt 3 lc rgb "#777777" title "fdpass-threads (Go, raw calls)", \
     data("fdpass") using 1:2 with linespoints lw 1 pt 10 dt 3 lc rgb "#aaaaaa" title "fdpass (Go, goroutines)", \
     data("handoff") using 1:2 with linespoints lw 2 pt 5 lc rgb "#d62728" title "handoff: bind of the cached socket (1 round trip)", \
     data("handoff-release") using 1:2 with linespoints lw 2 pt 4 lc rgb "#ff7f0e" title "handoff-release: bind + release (2)", \
     data("pickup") using 1:2 with linespoints lw 2 pt 9 lc rgb "#9467bd" title "pickup: token + pickup (2)"
unset multiplot
