// A Web Worker for pages opened from the file system. Browsers refuse to start a worker from a file://
// script, and the site's search runs in one; on file:// pages this replaces `Worker` by one that runs
// the worker's script in a hidden iframe of the same page, passing messages both ways. Served pages
// (http, https) keep the browser's own Worker. Nothing is fetched from the network.
(function () {
  "use strict";
  if (location.protocol !== "file:") return;

  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this.pending = [];
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      this.frame.setAttribute("aria-hidden", "true");
      this.frame.setAttribute("tabindex", "-1");
      (document.body || document.documentElement).appendChild(this.frame);
      const scope = this.frame.contentWindow;
      // the worker's global postMessage answers the page
      scope.postMessage = (data) => setTimeout(() => this.emit("message", data));
      scope.importScripts = () => {
        throw new Error("importScripts is not available to a worker started from file://");
      };
      const script = scope.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = () => {
        const queued = this.pending;
        this.pending = null;
        queued.forEach((data) => this.deliver(data));
      };
      script.onerror = () => this.emit("error", new Error(`cannot load ${script.src}`));
      scope.document.head.appendChild(script);
    }

    postMessage(data) {
      if (this.pending) this.pending.push(data);
      else this.deliver(data);
    }

    deliver(data) {
      const scope = this.frame.contentWindow;
      setTimeout(() => scope.dispatchEvent(new scope.MessageEvent("message", { data })));
    }

    emit(type, data) {
      const event = type === "message" ? new MessageEvent(type, { data }) : new ErrorEvent(type, { error: data });
      this.dispatchEvent(event);
      const handler = type === "message" ? this.onmessage : this.onerror;
      if (typeof handler === "function") handler.call(this, event);
    }

    terminate() {
      this.frame.remove();
    }
  }

  window.Worker = IFrameWorker;
})();
