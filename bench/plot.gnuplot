# Chart for bench/compare.sh. Variables (set with gnuplot -e):
#   tpsfile    "scenario <target>..." header, then one row per scenario: median TPS ("?" = none)
#   cpufile    the same for the poolers' CPU µs per transaction (no direct column)
#   idlefile   "" or rows "<pooler> <KiB per idle client>"
#   outfile    PNG to write; charttitle; ntargets = number of targets including direct
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1100,1250 font "sans,10"
} else {
  set terminal png size 1100,1250
}
set output outfile
set datafile missing "?"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set grid ytics
set xtics nomirror
has_idle = strlen(idlefile) > 0
if (has_idle) {
  set multiplot layout 3,1 title charttitle font ",12"
} else {
  set multiplot layout 2,1 title charttitle font ",12"
}

# Same colour for a target in every panel: direct 1, then the poolers in order.
set title "Throughput: transactions per second (median of rounds, log scale)"
set ylabel "TPS"
set logscale y
plot for [i=2:ntargets+1] tpsfile using i:xtic(1) title columnheader(i) linecolor (i - 1)

set title "Pooler CPU time per transaction, user+sys (µs, log scale; lower is better)"
set ylabel "µs per transaction"
plot for [i=2:ntargets] cpufile using i:xtic(1) title columnheader(i) linecolor i

if (has_idle) {
  unset logscale y
  set title "Pooler RSS per idle logged-in client (KiB; missing bar = the scenario failed)"
  set ylabel "KiB per client"
  set yrange [0:*]
  set style fill solid 0.85 border -1
  set boxwidth 0.6
  set xrange [-0.6:*]
  set offsets 0, 0.6, graph 0.1, 0
  # Rows are in target order (Sluice, PgBouncer, extras), coloured as in the panels above.
  plot idlefile using 0:2:($0 + 2):xtic(1) with boxes linecolor variable notitle, \
       idlefile using 0:(0):3 with labels offset 0,1 notitle
}
unset multiplot
