// The explorer's only script: show a video's length once the browser has read its metadata.
document.addEventListener("DOMContentLoaded", () => {
  const player = document.getElementById("player");
  const shown = document.getElementById("duration");
  if (!player || !shown) return;
  const report = () => { shown.textContent = `${player.duration.toFixed(1)} s`; shown.dataset.seconds = player.duration; };
  player.addEventListener("loadedmetadata", report);
  player.addEventListener("error", () => { shown.textContent = "the browser could not play this file"; });
  if (player.readyState >= 1) report();
});
