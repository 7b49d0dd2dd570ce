// Segment Scene: show only the widgets the chosen mode uses.
//
// The table (mode -> widget names) comes from the node definition: the `widgets_by_mode` option of
// the `mode` input, set in nodes/segment.py, so the rule lives in one place. Hidden widgets keep their
// values and are still saved and sent with the prompt; the node ignores them in that mode.
// Works with the frontends of ComfyUI 0.8 (1.35) and 0.27 (1.45): both draw a widget only when
// `widget.hidden` is false; `options.hidden` keeps it out of the properties panel too.
import { app } from "../../scripts/app.js";

function applyMode(node, byMode) {
  const modeWidget = node.widgets?.find((w) => w.name === "mode");
  if (!modeWidget) return;
  const shown = new Set(byMode[modeWidget.value] ?? Object.values(byMode).flat());
  const managed = new Set(Object.values(byMode).flat());
  let changed = false;
  for (const w of node.widgets) {
    if (!managed.has(w.name)) continue;
    const hide = !shown.has(w.name);
    if (Boolean(w.hidden) !== hide) changed = true;
    w.hidden = hide;
    w.options = w.options ?? {};
    w.options.hidden = hide;
  }
  if (changed) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas?.(true, true);
  }
}

app.registerExtension({
  name: "ComfyUI-MIDI.SegmentSceneModes",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "SegmentScene") return;
    const byMode = nodeData.input?.required?.mode?.[1]?.widgets_by_mode;
    if (!byMode) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const modeWidget = this.widgets?.find((w) => w.name === "mode");
      if (modeWidget) {
        const callback = modeWidget.callback;
        const node = this;
        modeWidget.callback = function () {
          const out = callback?.apply(this, arguments);
          applyMode(node, byMode);
          return out;
        };
      }
      applyMode(this, byMode);
      return result;
    };

    // a loaded or pasted workflow sets the saved mode after the node was created
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      applyMode(this, byMode);
      return result;
    };
  },
});
