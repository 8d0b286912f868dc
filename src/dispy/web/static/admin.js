// Admin Cluster(s): every node found, details where the admin secret matches, controls.
"use strict";
(() => {
  const {el, bytes, pct, secs, clock, Table, Chart, live, post, act} = Dispy;
  const summary = new Table(document.getElementById("summary"), [
    {key: "nodes", title: "Nodes"}, {key: "jobs_done", title: "Jobs done"},
    {key: "cpu_time", title: "CPU time (s)", fmt: secs},
  ], {id: "summary-table"});
  const nodes = new Table(document.getElementById("nodes"), [
    {key: "ip_addr", title: "IP address", cls: "text", sort: (r) => r.ip_addr.split(".").map((x) => x.padStart(3, "0")).join(".") + ":" + String(r.port).padStart(5, "0"),
     cell: (r) => el("a", {href: "admin_node?node=" + encodeURIComponent(r.key), cls: "node-link"}, r.key)},
    {key: "name", title: "Name", cls: "text"}, {key: "cpus", title: "CPUs"},
    {key: "admin", title: "Admin", cell: (r) => r.admin ? "yes" : "no"},
    {key: "busy", title: "Running"}, {key: "jobs_done", title: "Jobs done"},
    {key: "cpu_time", title: "CPU time (s)", fmt: secs},
    {key: "cpu", title: "CPU avail", sort: (r) => r.avail && r.avail.cpu, cell: (r) => pct(r.avail && r.avail.cpu)},
    {key: "memory", title: "Memory avail", sort: (r) => r.avail && r.avail.memory, cell: (r) => bytes(r.avail && r.avail.memory)},
    {key: "service", title: "Service", cls: "text", cell: (r) => r.admin ? Admin.serviceText(r.service) : "-"},
    {key: "updated", title: "Last update", fmt: clock},
    {key: "error", title: "Note", cls: "text"},
  ], {select: true, id: "node-table"});
  const jobs = new Chart(document.getElementById("charts"), {title: "Jobs done per node", id: "chart-jobs", min: 4, fmt: (v) => v.toFixed(0)});
  let interval = 60;
  const poll = Admin.pollControls(() => interval);
  Admin.serviceControls(document.getElementById("service-controls"), () => nodes.selection());
  Admin.cpuControls(document.getElementById("cpu-controls"), () => nodes.selection());
  document.getElementById("add").addEventListener("click", () => act(() => post("api/add_node", {
    host: document.getElementById("add-host").value.trim(),
    port: Number(document.getElementById("add-port").value) || null})));
  const secret = document.getElementById("secret");
  document.getElementById("show-secret").addEventListener("change", (e) => {
    secret.type = e.target.checked ? "text" : "password";
  });
  document.getElementById("set-secret").addEventListener("click", () => act(async () => {
    const a = await post("api/set_secret", {secret: secret.value});
    secret.value = "";
    return a;
  }));
  live({tick: (s) => {
    if (s.poll_interval !== interval) { interval = s.poll_interval; poll.value = interval; }
    summary.render([Object.assign({key: "all"}, s.summary)]);
    nodes.render(s.nodes);
    for (const [key, pts] of Object.entries(s.history)) jobs.set(key, pts);
    jobs.draw();
  }});
})();
