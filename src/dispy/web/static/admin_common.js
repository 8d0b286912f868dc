// dispyadmin: the controls both admin pages share (service times, CPUs, poll interval).
"use strict";
const Admin = (() => {
  const {el, post, act} = Dispy;

  function serviceControls(box, nodes) {
    const control = el("select", {id: "service-control"},
      el("option", {value: "start"}, "Start"), el("option", {value: "stop"}, "Stop"),
      el("option", {value: "end"}, "End"));
    const time = el("input", {id: "service-time", placeholder: "HH:MM", size: 5});
    const now = el("input", {type: "checkbox", id: "service-now"});
    const button = el("button", {id: "set-service", onclick: () => act(async () => {
      const when = now.checked ? "now" : time.value.trim();
      if (!now.checked && when && !/^([01]?\d|2[0-3]):[0-5]\d$/.test(when)) {
        throw new Error("time must be HH:MM (24-hour), or choose Now");
      }
      return post("api/service_time", {nodes: nodes(), control: control.value, time: when});
    })}, "Set");
    box.append(el("label", {}, "Service ", control), el("label", {}, "at ", time),
               el("label", {}, now, " Now"), button,
               el("span", {cls: "muted"}, "(empty time clears it)"));
  }

  function cpuControls(box, nodes) {
    const cpus = el("input", {type: "number", id: "cpus"});
    const all = el("input", {type: "checkbox", id: "cpus-all"});
    const button = el("button", {id: "set-cpus", onclick: () => act(async () => {
      if (!all.checked && (cpus.value === "" || !Number.isInteger(Number(cpus.value)))) {
        throw new Error("CPUs must be a whole number (negative: leave that many unused)");
      }
      return post("api/set_cpus", {nodes: nodes(), cpus: all.checked ? "all" : Number(cpus.value)});
    })}, "Set");
    box.append(el("label", {}, "CPUs ", cpus), el("label", {}, all, " All"), button);
  }

  function pollControls(getInterval) {
    const poll = document.getElementById("poll");
    poll.value = getInterval();
    document.getElementById("set-poll").addEventListener("click", () => act(async () => {
      const a = await post("api/poll", {interval: Number(poll.value)});
      a.text = `nodes are polled every ${a.poll_interval} s`;
      return a;
    }));
    document.getElementById("poll-now").addEventListener("click", () => act(async () => {
      const a = await post("api/poll", {});
      a.text = "polled";
      return a;
    }));
    return poll;
  }

  function serviceText(s) {
    if (!s) return "-";
    const parts = ["start", "stop", "end"].filter((k) => s[k]).map((k) => `${k} ${s[k]}`);
    return parts.length ? parts.join(", ") : "always";
  }

  return {serviceControls, cpuControls, pollControls, serviceText};
})();
