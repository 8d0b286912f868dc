// Admin Node: one node's details and controls, including the number of clients to serve.
"use strict";
(() => {
  const {el, bytes, pct, secs, clock, Table, Chart, live, post, act, param} = Dispy;
  let key = param("node") || "";
  const pick = document.getElementById("pick");
  pick.addEventListener("change", () => { location.search = "?node=" + encodeURIComponent(pick.value); });
  const info = new Table(document.getElementById("node"), [
    {key: "key", title: "Node", cls: "text"}, {key: "name", title: "Name", cls: "text"},
    {key: "cpus", title: "CPUs"}, {key: "max_cpus", title: "Processors"},
    {key: "busy", title: "Running"}, {key: "jobs_done", title: "Jobs done"},
    {key: "cpu_time", title: "CPU time (s)", fmt: secs},
    {key: "cpu", title: "CPU avail", cell: (r) => pct(r.avail && r.avail.cpu)},
    {key: "memory", title: "Memory avail", cell: (r) => bytes(r.avail && r.avail.memory)},
    {key: "service", title: "Service", cls: "text", cell: (r) => r.admin ? Admin.serviceText(r.service) : "-"},
    {key: "service_text", title: "Now", cls: "text"},
    {key: "serve", title: "Clients left", cell: (r) => r.serve === -1 ? "forever" : r.serve},
    {key: "served", title: "Served"},
    {key: "owner", title: "Client", cls: "text"},
    {key: "updated", title: "Last update", fmt: clock},
    {key: "error", title: "Note", cls: "text"},
  ], {id: "node-info"});
  const charts = document.getElementById("charts");
  const jobs = new Chart(charts, {title: "Jobs done", id: "chart-jobs", min: 4, fmt: (v) => v.toFixed(0)});
  const cpu = new Chart(charts, {title: "CPU used (%)", id: "chart-cpu", max: 100});
  const mem = new Chart(charts, {title: "Memory available", id: "chart-mem", fmt: bytes});
  let interval = 60;
  const poll = Admin.pollControls(() => interval);
  Admin.serviceControls(document.getElementById("service-controls"), () => [key]);
  Admin.cpuControls(document.getElementById("cpu-controls"), () => [key]);
  document.getElementById("set-serve").addEventListener("click", () => act(() => post("api/serve", {
    nodes: [key], clients: Number(document.getElementById("serve").value)})));
  async function history() {
    try {
      const d = await Dispy.get("api/node?node=" + encodeURIComponent(key));
      jobs.set(key, d.history.map(([t, j]) => [t, j]));
      cpu.set(key, d.history.map(([t, , c]) => [t, c]));
      mem.set(key, d.history.filter((p) => p[3] !== null).map(([t, , , m]) => [t, m]));
      jobs.draw(); cpu.draw(); mem.draw();
    } catch (e) { /* node not found yet */ }
  }
  live({tick: (s) => {
    if (s.poll_interval !== interval) { interval = s.poll_interval; poll.value = interval; }
    if (!key && s.nodes.length) key = s.nodes[0].key;
    const keys = s.nodes.map((n) => n.key).sort();
    if (pick.options.length !== keys.length) {
      pick.replaceChildren(...keys.map((k) => el("option", {value: k}, k)));
    }
    pick.value = key;
    document.getElementById("node-title").textContent = "Admin Node " + key;
    const n = s.nodes.find((x) => x.key === key);
    if (!n) { info.render([]); return; }
    info.render([n]);
    const clients = (n.clients || []).flatMap((c) => c.computations.map((p) =>
      `${c.name} at ${c.addr}: ${p.name} (${p.running} running, ${p.jobs_done} done)`));
    document.getElementById("clients").replaceChildren(
      ...clients.map((t) => el("div", {cls: "muted"}, t)));
    history();
  }});
})();
