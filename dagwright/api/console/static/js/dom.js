// A tiny element builder: h("div", {class: "x", onclick: f}, "text", child).
export function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === false)
            continue;
        if (key.startsWith("on") && typeof value === "function") {
            el.addEventListener(key.slice(2), value);
        }
        else if (value === true) {
            el.setAttribute(key, "");
        }
        else {
            el.setAttribute(key, String(value));
        }
    }
    for (const child of children) {
        if (child === null || child === undefined || child === false)
            continue;
        el.append(typeof child === "number" ? String(child) : child);
    }
    return el;
}
/** Children for replaceChildren, the absent ones left out. */
export function present(...children) {
    return children
        .filter((c) => c !== null && c !== undefined && c !== false)
        .map((c) => (typeof c === "number" ? String(c) : c));
}
export function when(iso) {
    if (!iso)
        return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}
export function duration(start, end) {
    if (!start)
        return "";
    const ms = (end ? new Date(end) : new Date()).getTime() - new Date(start).getTime();
    if (!Number.isFinite(ms) || ms < 0)
        return "";
    const s = Math.round(ms / 1000);
    if (s < 60)
        return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60)
        return `${m}m${s % 60 ? `${s % 60}s` : ""}`;
    return `${Math.floor(m / 60)}h${m % 60}m`;
}
