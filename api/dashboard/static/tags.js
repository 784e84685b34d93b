/* The tags page: copy an NFC tag's NDEF hex to the clipboard. Without the asynchronous
   clipboard (a page over plain http on another host is not a secure context) or when it
   is refused, the text is selected and copied the old way, and stays selected so that
   Ctrl+C / long-press works too. */
(function () {
  "use strict";
  function select(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var text = source.textContent;
      var done = function () { button.textContent = button.getAttribute("data-copied"); };
      var fallback = function () {
        select(source);
        try {
          if (document.execCommand("copy")) { done(); }
        } catch (e) { /* the text stays selected for the person to copy */ }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
      } else {
        fallback();
      }
    });
  });
})();
