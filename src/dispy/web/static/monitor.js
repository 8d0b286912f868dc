// Cluster Status: summary per cluster, jobs finished per second, nodes and their load.
"use strict";
(() => {
  const {el, bytes, pct, secs, clock, Table, Chart, live} = Dispy;
  const summary = new Table(document.getElementById("clusters"), [
    {key: "name", title: "Cluster", cls: "text"},
    {key: "nodes", title: "Nodes"}, {key: "cpus", title: "CPUs"},
    {key: "submitted", title: "Submitted"}, {key: "pending", title: "Pending"},
    {key: "running", title: "Running"}, {key: "finished", title: "Finished"},
    {key: "cancelled", title: "Cancelled"}, {key: "failed", title: "Failed"},
    {key: "cpu_time", title: "CPU time (s)", fmt: secs},
  ], {id: "cluster-table"});
  const nodes = new Table(document.getElementById("nodes"), [
    {key: "key", title: "Node", cls: "text",
     cell: (r) => el("a", {href: "node?node=" + encodeURIComponent(r.key), cls: "node-link"}, r.key)},
    {key: "name", title: "Name", cls: "text"},
    {key: "cpus", title: "CPUs"}, {key: "busy", title: "Running"},
    {key: "jobs_done", title: "Done"}, {key: "cpu_time", title: "CPU time (s)", fmt: secs},
    {key: "cpu", title: "CPU avail", sort: (r) => r.avail && r.avail.cpu, cell: (r) => pct(r.avail && r.avail.cpu)},
    {key: "memory", title: "Memory avail", sort: (r) => r.avail && r.avail.memory, cell: (r) => bytes(r.avail && r.avail.memory)},
    {key: "disk", title: "Disk avail", sort: (r) => r.avail && r.avail.disk, cell: (r) => bytes(r.avail && r.avail.disk)},
    {key: "swap", title: "Swap avail", sort: (r) => r.avail && r.avail.swap, cell: (r) => pct(r.avail && r.avail.swap)},
    {key: "tx", title: "Sent", fmt: bytes}, {key: "rx", title: "Received", fmt: bytes},
    {key: "update_time", title: "Updated", fmt: clock},
    {key: "state", title: "State", cls: "text"},
  ], {id: "node-table"});
  const charts = document.getElementById("charts");
  const rate = new Chart(charts, {title: "Jobs finished per second", id: "chart-rate"});
  const cpu = new Chart(charts, {title: "CPU used per node (%)", id: "chart-cpu", max: 100});
  const mem = new Chart(charts, {title: "Memory available per node", id: "chart-mem", fmt: bytes});

  function addPoint(p) {
    rate.add("jobs/s", p.t, p.rate);
    for (const [key, [c, m]] of Object.entries(p.nodes || {})) {
      cpu.add(key, p.t, c);
      mem.add(key, p.t, m);
    }
  }
  function show(state) {
    summary.render(state.clusters.map((c) => Object.assign({key: c.name}, c)));
    nodes.render(state.nodes);
    rate.draw(); cpu.draw(); mem.draw();
  }
  live({
    init: (d) => {
      for (const [t, r] of d.history.rate) rate.add("jobs/s", t, r);
      for (const [key, pts] of Object.entries(d.history.nodes)) {
        cpu.set(key, pts.map(([t, c]) => [t, c]));
        mem.set(key, pts.map(([t, , m]) => [t, m]));
      }
      show(d.state);
    },
    tick: (d) => { d.points.forEach(addPoint); show(d.state); },
  });
})();
