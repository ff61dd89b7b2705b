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

set title "Connected sockets: brokered connect vs the client's own connect()"
plot data("direct-connect") using 1:2 with linespoints lw 2 pt 7 dt 2 lc rgb "#444444" title "floor: direct connect()", \
     data("connect") using 1:2 with linespoints lw 2 pt 5 lc rgb "#1f77b4" title "connect (native protocol)", \
     data("clearwater") using 1:2 with linespoints lw 2 pt 9 lc rgb "#2ca02c" title "clearwater (new UNIX connection each)"

set title "Bound sockets: cached handoff vs a minimal fd-passing server"
plot data("fdpass") using 1:2 with linespoints lw 2 pt 7 dt 2 lc rgb "#444444" title "floor: fdpass (1 round trip)", \
     data("direct-bind") using 1:2 with linespoints lw 2 pt 6 dt 3 lc rgb "#888888" title "reference: direct bind()+listen()", \
     data("handoff") using 1:2 with linespoints lw 2 pt 5 lc rgb "#d62728" title "handoff: bind of the cached socket (1 round trip)", \
     data("handoff-release") using 1:2 with linespoints lw 2 pt 4 lc rgb "#ff7f0e" title "handoff-release: bind + release (2)", \
     data("pickup") using 1:2 with linespoints lw 2 pt 9 lc rgb "#9467bd" title "pickup: token + pickup (2)"
unset multiplot
