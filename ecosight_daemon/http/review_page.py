"""The Review page's markup: one item at a time (its snippet as a player and a spectrogram,
its clock time and source, the model's guess and score), the keys that decide it, the
round's progress and the items reviewers disagree on. The page's script (dashboard.html)
fills it from `GET /review` and sends decisions to `POST /review/{id}`."""

from __future__ import annotations


def review_page() -> str:
    return """
<p id=review-progress>Loading the queue...</p>
<p id=review-scoreboard></p>
<p><label>Reviewer <input id=reviewer type=text maxlength=64 autocomplete=off></label>
 <small>each decision is recorded under this name</small></p>
<div id=review-item hidden>
  <p><b id=review-guess></b> &middot; score <span id=review-score></span> &middot; <small id=review-why></small><br>
  <time id=review-clock></time> &middot; <small id=review-source></small></p>
  <img id=review-spectrogram alt="spectrogram of the snippet" width=375 height=128>
  <audio id=review-audio controls preload=auto></audio>
  <p id=review-keys>
    <button data-action=confirm>Confirm <kbd>c</kbd></button>
    <button data-action=reject>Reject: background <kbd>r</kbd></button>
    <span id=review-relabel></span>
    <button data-action=uncertain>Uncertain <kbd>u</kbd></button>
    <button data-action=skip>Skip <kbd>s</kbd></button>
    <button data-action=undo>Undo <kbd>z</kbd></button>
  </p>
</div>
<p id=review-empty hidden>Nothing waiting for you: new items are queued after the next detection run.</p>
<p id=review-answer class=answer></p>
<h2>Disagreements</h2>
<p><small>An item counts only when its reviewers agree; undo a decision to settle it.</small></p>
<ul id=review-disagreed></ul>"""
