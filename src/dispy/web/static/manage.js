// Manage: CPUs per node, allocate / deallocate / close nodes, add a node, update interval.
"use strict";
(() => {
  const {el, secs, Table, live, post, act, get} = Dispy;
  const cpusInput = {};
  const table = new Table(document.getElementById("nodes"), [
    {key: "key", title: "Node", cls: "text",
     cell: (r) => el("a", {href: "node?node=" + encodeURIComponent(r.key)}, r.key)},
    {key: "name", title: "Name", cls: "text"},
    {key: "cpus", title: "CPUs"}, {key: "busy", title: "Running"},
    {key: "jobs_done", title: "Done"}, {key: "cpu_time", title: "CPU time (s)", fmt: secs},
    {key: "clusters", title: "Clusters", cls: "text", cell: (r) => r.clusters.join(", ")},
    {key: "state", title: "State", cls: "text"},
    {key: "set", title: "Set CPUs", cell: (r) => {
      const box = el("input", {type: "number", cls: "cpus", "data-node": r.key});
      box.value = cpusInput[r.key] !== undefined ? cpusInput[r.key] : r.cpus;
      box.addEventListener("input", () => { cpusInput[r.key] = box.value; });
      const button = el("button", {cls: "set-cpus", "data-node": r.key, onclick: () => act(async () => {
        const a = await post("api/set_cpus", {node: r.key, cpus: Number(box.value), cluster: cluster()});
        delete cpusInput[r.key];
        const got = Object.entries(a.cpus).map(([c, n]) => `${c}: ${n < 0 ? "refused" : n}`);
        a.text = `${r.key} CPUs: ${got.join(", ")}`;
        return a;
      })}, "Set");
      return el("span", {}, box, button);
    }},
  ], {select: true, id: "node-table"});
  const pick = document.getElementById("cluster");
  const cluster = () => pick.value;
  get("api/config").then((c) => {
    for (const name of c.clusters) pick.append(el("option", {value: name}, name));
    document.getElementById("poll").value = c.poll_sec;
  });
  for (const action of ["allocate", "deallocate", "close"]) {
    document.getElementById(action).addEventListener("click", () => act(async () => {
      const nodes = table.selection();
      if (!nodes.length) throw new Error("select nodes first");
      const a = await post("api/node_action", {action, nodes, cluster: cluster()});
      a.text = `${action}: ` + Object.entries(a.results).map(
        ([n, r]) => `${n} ${Object.values(r).every((v) => v === 0) ? "ok" : "failed"}`).join(", ");
      return a;
    }));
  }
  document.getElementById("add").addEventListener("click", () => act(async () => {
    const host = document.getElementById("add-host").value.trim();
    const a = await post("api/add_node", {
      host, port: Number(document.getElementById("add-port").value) || null,
      cpus: Number(document.getElementById("add-cpus").value) || 0, cluster: cluster()});
    a.text = `asked to add ${host}`;
    return a;
  }));
  document.getElementById("set-poll").addEventListener("click", () => act(async () => {
    const a = await post("api/settings", {poll_sec: Number(document.getElementById("poll").value)});
    a.text = `pages update at least every ${a.poll_sec} s`;
    return a;
  }));
  live({init: (d) => table.render(d.state.nodes), tick: (d) => table.render(d.state.nodes)});
})();
