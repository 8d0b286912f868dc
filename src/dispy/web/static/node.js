// Node: its details, its CPU and memory over time, and its running jobs (cancel them).
"use strict";
(() => {
  const {bytes, pct, secs, clock, Table, Chart, live, get, post, act, param} = Dispy;
  const key = param("node") || "";
  document.getElementById("node-title").textContent = "Node " + key;
  const info = new Table(document.getElementById("node"), [
    {key: "key", title: "Node", cls: "text"}, {key: "name", title: "Name", cls: "text"},
    {key: "cpus", title: "CPUs"}, {key: "busy", title: "Running"},
    {key: "jobs_done", title: "Done"}, {key: "cpu_time", title: "CPU time (s)", fmt: secs},
    {key: "cpu", title: "CPU avail", cell: (r) => pct(r.avail && r.avail.cpu)},
    {key: "memory", title: "Memory avail", cell: (r) => bytes(r.avail && r.avail.memory)},
    {key: "disk", title: "Disk avail", cell: (r) => bytes(r.avail && r.avail.disk)},
    {key: "tx", title: "Sent", fmt: bytes}, {key: "rx", title: "Received", fmt: bytes},
    {key: "clusters", title: "Clusters", cls: "text", cell: (r) => r.clusters.join(", ")},
    {key: "state", title: "State", cls: "text"},
  ], {id: "node-info"});
  const columns = [
    {key: "id", title: "Job", cls: "text"}, {key: "cluster", title: "Cluster", cls: "text"},
    {key: "status", title: "Status", cls: "text"},
    {key: "start_time", title: "Started", fmt: clock},
  ];
  const jobs = new Table(document.getElementById("jobs"), columns, {select: true, id: "job-table"});
  const charts = document.getElementById("charts");
  const cpu = new Chart(charts, {title: "CPU used (%)", id: "chart-cpu", max: 100});
  const mem = new Chart(charts, {title: "Memory available", id: "chart-mem", fmt: bytes});
  let last = null;

  async function refresh() {
    try {
      const d = await get("api/node?node=" + encodeURIComponent(key));
      if (d.jobs.some((j) => j.args !== null) && columns.length === 4) {
        columns.push({key: "args", title: "Arguments", cls: "text"});
      }
      info.render([d.node]);
      jobs.render(d.jobs);
      cpu.set(key, d.history.map(([t, c]) => [t, c]));
      mem.set(key, d.history.map(([t, , m]) => [t, m]));
      cpu.draw(); mem.draw();
    } catch (e) {
      Dispy.message(String(e.message || e), true);
    }
  }
  document.getElementById("cancel").addEventListener("click", () => act(async () => {
    const sel = jobs.selection();
    if (!sel.length) throw new Error("select the jobs to cancel first");
    const a = await post("api/cancel_jobs", {node: key, jobs: sel});
    a.text = `cancelled ${a.cancelled} job(s)`;
    refresh();
    return a;
  }));
  live({
    init: () => refresh(),
    tick: (d) => {
      const n = d.state.nodes.find((x) => x.key === key);
      const sig = n ? `${n.busy}/${n.jobs_done}/${n.cpus}/${n.state}/${n.update_time}` : "none";
      if (sig !== last) { last = sig; refresh(); }
    },
  });
})();
