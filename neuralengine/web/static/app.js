// neuralengine serve: the page. Plain JavaScript, no build step, no library.
// The board is drawn here as SVG with python-chess's pieces (/pieces.svg); every position,
// legal move and score comes from the server's JSON API.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const SQ = 45;
const PIECE_IDS = {
  P: "white-pawn", N: "white-knight", B: "white-bishop", R: "white-rook", Q: "white-queen", K: "white-king",
  p: "black-pawn", n: "black-knight", b: "black-bishop", r: "black-rook", q: "black-queen", k: "black-king",
};
const FILES = "abcdefgh";
const START_FEN = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1";

function $(id) { return document.getElementById(id); }

function svgEl(name, attrs, parent) {
  const node = document.createElementNS(SVGNS, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function pct(p, digits = 2) { return (p * 100).toFixed(digits); }

// --- the server -----------------------------------------------------------

const settings = { model: null, bodyLimit: 1 << 20 };

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server cannot be reached (is neuralengine serve still running?)");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    throw new Error((data && data.error) || `the server answered ${response.status}`);
  }
  return data;
}

function showError(view, err) {
  const box = $(`${view}-error`);
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

// --- the board --------------------------------------------------------------

function parsePlacement(fen) {
  const pieces = {};
  const rows = fen.split(" ")[0].split("/");
  rows.forEach((row, i) => {
    let file = 0;
    for (const ch of row) {
      if (/[1-8]/.test(ch)) file += Number(ch);
      else { pieces[FILES[file] + String(8 - i)] = ch; file += 1; }
    }
  });
  return pieces;
}

class Board {
  // ``promotion``: the id of the select that names the piece a pawn promotes to.
  constructor(container, onMove, promotion) {
    this.container = container;
    this.onMove = onMove;
    this.promotion = promotion;
    this.flipped = false;
    this.fen = START_FEN;
    this.pieces = parsePlacement(START_FEN);
    this.legal = [];
    this.lastMove = null;
    this.check = false;
    this.arrows = [];
    this.selected = null;
    this.svg = svgEl("svg", { viewBox: "0 0 360 360", class: "board-svg" });
    container.appendChild(this.svg);
    this.svg.addEventListener("click", (event) => {
      const target = event.target.closest("[data-square]");
      if (target) this.click(target.getAttribute("data-square"));
    });
    this.render();
  }

  setPosition(position) {
    this.fen = position.fen;
    this.pieces = parsePlacement(position.fen);
    this.legal = position.legal || [];
    this.lastMove = position.last_move || null;
    this.check = !!position.check;
    this.selected = null;
    this.render();
  }

  setArrows(arrows) { this.arrows = arrows || []; this.render(); }

  setFlipped(flipped) { this.flipped = flipped; this.render(); }

  // Show a move at once (before the server's answer): the piece, castling's rook, en passant, promotion.
  preview(uci) {
    const from = uci.slice(0, 2), to = uci.slice(2, 4), piece = this.pieces[from];
    if (!piece) return;
    delete this.pieces[from];
    if (piece.toLowerCase() === "p" && from[0] !== to[0] && !this.pieces[to]) delete this.pieces[to[0] + from[1]];
    if (piece.toLowerCase() === "k" && Math.abs(FILES.indexOf(to[0]) - FILES.indexOf(from[0])) === 2) {
      const kingside = to[0] === "g";
      const rookFrom = (kingside ? "h" : "a") + from[1], rookTo = (kingside ? "f" : "d") + from[1];
      this.pieces[rookTo] = this.pieces[rookFrom];
      delete this.pieces[rookFrom];
    }
    this.pieces[to] = uci.length > 4 ? (piece === "P" ? uci[4].toUpperCase() : uci[4]) : piece;
    this.lastMove = uci;
    this.legal = [];
    this.arrows = [];
    this.selected = null;
    this.check = false;
    this.render();
  }

  xy(square) {
    const file = FILES.indexOf(square[0]), rank = Number(square[1]) - 1;
    const col = this.flipped ? 7 - file : file, row = this.flipped ? rank : 7 - rank;
    return [col * SQ, row * SQ];
  }

  centre(square) { const [x, y] = this.xy(square); return [x + SQ / 2, y + SQ / 2]; }

  click(square) {
    if (this.selected) {
      const candidates = this.legal.filter((m) => m.startsWith(this.selected + square));
      if (candidates.length) {
        let move = candidates[0];
        if (candidates.length > 1) {
          const wanted = this.promotion ? $(this.promotion).value : "q";
          move = candidates.find((m) => m[4] === wanted) || candidates[0];
        }
        this.selected = null;
        this.onMove(move);
        return;
      }
    }
    const movable = this.legal.some((m) => m.startsWith(square));
    this.selected = movable && this.selected !== square ? square : null;
    this.render();
  }

  render() {
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("data-fen", this.fen);
    svg.setAttribute("data-last-move", this.lastMove || "");
    const kingInCheck = this.check ? Object.keys(this.pieces).find(
      (sq) => this.pieces[sq] === (this.fen.split(" ")[1] === "w" ? "K" : "k")) : null;
    for (let file = 0; file < 8; file++) {
      for (let rank = 0; rank < 8; rank++) {
        const square = FILES[file] + String(rank + 1);
        const [x, y] = this.xy(square);
        let cls = (file + rank) % 2 === 1 ? "sq light" : "sq dark";
        svgEl("rect", { x, y, width: SQ, height: SQ, class: cls, "data-square": square }, svg);
        const marks = [];
        if (this.lastMove && (this.lastMove.slice(0, 2) === square || this.lastMove.slice(2, 4) === square)) marks.push("last");
        if (square === kingInCheck) marks.push("check");
        if (square === this.selected) marks.push("selected");
        for (const mark of marks) svgEl("rect", { x, y, width: SQ, height: SQ, class: `overlay ${mark}` }, svg);
      }
    }
    for (let i = 0; i < 8; i++) {
      const fileSq = FILES[i] + (this.flipped ? "8" : "1");
      const [fx, fy] = this.xy(fileSq);
      const light = (i % 2 === 1) !== this.flipped;
      svgEl("text", { x: fx + SQ - 6, y: fy + SQ - 2, class: "coord", fill: light ? "#b58863" : "#f0d9b5" }, svg)
        .textContent = FILES[i];
      const rankSq = (this.flipped ? "h" : "a") + String(i + 1);
      const [rx, ry] = this.xy(rankSq);
      svgEl("text", { x: rx + 2, y: ry + 8, class: "coord", fill: (i % 2 === 0) === !this.flipped ? "#f0d9b5" : "#b58863" }, svg)
        .textContent = String(i + 1);
    }
    for (const [square, piece] of Object.entries(this.pieces)) {
      const [x, y] = this.xy(square);
      svgEl("use", { href: `#${PIECE_IDS[piece]}`, transform: `translate(${x}, ${y})`, class: "overlay piece",
        "data-piece": piece, "data-on": square }, svg);
    }
    if (this.selected) {
      for (const move of this.legal.filter((m) => m.startsWith(this.selected))) {
        const [cx, cy] = this.centre(move.slice(2, 4));
        svgEl("circle", { cx, cy, r: 7, class: "overlay target", "data-target": move.slice(2, 4) }, svg);
      }
    }
    this.drawArrows();
  }

  // The geometry of neuralengine.picture.arrows_svg: the best arrow on top, the label in the head.
  drawArrows() {
    const layer = svgEl("g", { class: "overlay arrows" }, this.svg);
    for (const arrow of [...this.arrows].reverse()) {
      const [x1, y1] = this.centre(arrow.tail), [x2, y2] = this.centre(arrow.head);
      const dx = x2 - x1, dy = y2 - y1, length = Math.hypot(dx, dy);
      const ux = dx / length, uy = dy / length;
      const headLen = Math.min(arrow.width * 1.6 + 8, length * 0.6), half = arrow.width * 0.9 + 5;
      const bx = x2 - ux * headLen, by = y2 - uy * headLen;
      const group = svgEl("g", { class: "arrow", "data-move": arrow.move, "data-win": arrow.win_prob,
        opacity: arrow.opacity }, layer);
      svgEl("line", { x1: x1 + ux * 10, y1: y1 + uy * 10, x2: bx, y2: by, stroke: arrow.colour,
        "stroke-width": arrow.width }, group);
      svgEl("polygon", { fill: arrow.colour, points:
        `${x2},${y2} ${bx - uy * half},${by + ux * half} ${bx + uy * half},${by - ux * half}` }, group);
      const label = svgEl("text", { x: x2 - ux * 14, y: y2 - uy * 14 + 3.5, "text-anchor": "middle", "font-size": 10,
        "font-family": "sans-serif", "font-weight": "bold", fill: "#fff", stroke: "#000", "stroke-width": 2.2,
        "paint-order": "stroke" }, group);
      label.textContent = arrow.label;
    }
  }
}

function moveList(container, sans, firstMoveNumber, whiteFirst, current, onPick) {
  container.textContent = "";
  let number = firstMoveNumber;
  sans.forEach((san, i) => {
    const white = (i % 2 === 0) === whiteFirst;
    if (white || i === 0) {
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = white ? `${number}.` : `${number}...`;
      container.appendChild(num);
    }
    const ply = document.createElement("span");
    ply.className = "ply" + (i + 1 === current ? " current" : "");
    ply.textContent = san;
    ply.setAttribute("data-ply", String(i + 1));
    if (onPick) ply.addEventListener("click", () => onPick(i + 1));
    container.appendChild(ply);
    if (!white) number += 1;
  });
}

// --- Analysis -------------------------------------------------------------

const analysis = {
  startFen: START_FEN, moves: [], sans: [], ply: 0, request: 0, rows: [], sortKey: "rank", sortAsc: true,
  firstMove: 1, whiteFirst: true,
};

function sortValue(row, key) {
  switch (key) {
    case "san": return row.san;
    case "win": return row.win_prob;
    case "cp": return row.cp === null ? 100000 : row.cp;
    case "w": return row.wdl[0];
    case "d": return row.wdl[1];
    case "l": return row.wdl[2];
    default: return row.rank;
  }
}

function renderMoveTable() {
  const body = $("move-table").querySelector("tbody");
  body.textContent = "";
  const rows = [...analysis.rows].sort((a, b) => {
    const va = sortValue(a, analysis.sortKey), vb = sortValue(b, analysis.sortKey);
    const order = va < vb ? -1 : va > vb ? 1 : a.rank - b.rank;
    return analysis.sortAsc ? order : -order;
  });
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-uci", row.uci);
    tr.setAttribute("data-win", String(row.win_prob));
    const cp = row.cp === null ? "#1" : (row.cp > 0 ? "+" : "") + row.cp;
    const cells = [row.rank, row.san, pct(row.win_prob), cp, (row.wdl[0] / 10).toFixed(1),
      (row.wdl[1] / 10).toFixed(1), (row.wdl[2] / 10).toFixed(1), row.note];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = String(value);
      td.className = ["rank", "san", "win", "cp", "w", "d", "l", "note"][i];
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => analysisMove(row.uci));
    body.appendChild(tr);
  }
  for (const th of $("move-table").querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === analysis.sortKey && analysis.sortAsc);
    th.classList.toggle("sorted-desc", th.dataset.sort === analysis.sortKey && !analysis.sortAsc);
  }
}

function renderWdl(result, position) {
  const bar = $("wdl");
  const wdl = result.wdl_white || [0, 1000, 0];
  bar.querySelector(".w").style.width = `${wdl[0] / 10}%`;
  bar.querySelector(".d").style.width = `${wdl[1] / 10}%`;
  bar.querySelector(".l").style.width = `${wdl[2] / 10}%`;
  bar.setAttribute("data-wdl", wdl.join(" "));
  $("wdl-text").textContent = result.wdl_white
    ? `White wins ${(wdl[0] / 10).toFixed(1)} %, draw ${(wdl[1] / 10).toFixed(1)} %, Black wins ${(wdl[2] / 10).toFixed(1)} %` +
      ` (after the best move; ${result.nodes} moves scored in ${result.time_ms.toFixed(1)} ms)`
    : (position.game_over ? `game over: ${position.game_over}` : "");
}

async function analyse() {
  const request = ++analysis.request;
  try {
    const data = await api("/api/analyse", {
      model: settings.model, fen: analysis.startFen, moves: analysis.moves.slice(0, analysis.ply),
      arrows: Number($("analysis-arrows").value) || 0,
    });
    if (request !== analysis.request) return;  // a newer position was asked for meanwhile
    showError("analysis", null);
    const result = data.analysis;
    for (let i = 0; i < data.sans.length; i++) analysis.sans[i] = data.sans[i];
    analysis.firstMove = data.first_move_number;
    analysis.whiteFirst = data.fens[0].split(" ")[1] === "w";
    $("analysis-board").querySelector("svg").setAttribute("data-model", data.model);
    analysisBoard.setPosition(data);
    analysisBoard.setArrows(result.arrows);
    analysis.rows = result.rows;
    $("value-label").textContent = result.label;
    renderMoveTable();
    renderWdl(result, data);
    const rule = [result.rule, result.draw_moves.length && !result.rule
      ? `draw by rule after ${result.draw_moves.join(", ")}` : null].filter(Boolean).join("; ");
    $("analysis-rule").textContent = rule;
    $("analysis-rule").hidden = !rule;
    $("analysis-status").textContent = data.game_over ? `Game over: ${data.game_over}` : `${data.fen}`;
    $("fen-input").value = data.fen;
    moveList($("history"), analysis.sans.slice(0, analysis.moves.length), analysis.firstMove, analysis.whiteFirst,
      analysis.ply, (ply) => { analysis.ply = ply; analyse(); });
    $("view-analysis").setAttribute("data-ready", String(request));
  } catch (err) {
    if (request === analysis.request) showError("analysis", err);
  }
}

function analysisMove(uci) {
  analysis.moves = analysis.moves.slice(0, analysis.ply).concat([uci]);
  analysis.sans = analysis.sans.slice(0, analysis.ply);
  analysis.ply += 1;
  analysisBoard.preview(uci);
  analyse();
}

async function loadPosition(body) {
  try {
    const data = await api("/api/position", body);
    showError("analysis", null);
    analysis.startFen = data.start_fen;
    analysis.moves = data.moves;
    analysis.sans = data.sans;
    analysis.ply = data.moves.length;
    await analyse();
  } catch (err) {
    showError("analysis", err);
  }
}

// --- Play -------------------------------------------------------------------

const play = { moves: [], side: "w", busy: false, started: false, clickAt: null, position: null, answers: 0 };

function renderPlay(data, note) {
  play.position = data;
  play.moves = data.moves;
  const yourTurn = data.turn === play.side && !data.game_over;
  playBoard.setPosition({ ...data, legal: yourTurn ? data.legal : [] });
  moveList($("play-moves"), data.sans, data.first_move_number, true, data.sans.length, null);
  let status = data.game_over ? `Game over: ${data.game_over}` : yourTurn ? "Your move" : "Engine to move";
  if (note) status = `${note}. ${status}`;
  $("play-status").textContent = status;
}

async function engineReply() {
  play.busy = true;
  $("play-status").textContent = "The engine is thinking…";
  try {
    const data = await api("/api/play", {
      model: settings.model, moves: play.moves, temperature: $("play-temperature").value || 0,
    });
    showError("play", null);
    const reply = data.reply;
    renderPlay(data, reply ? `Engine played ${reply.san}` +
      (reply.win_prob !== null ? ` (${pct(reply.win_prob, 1)} % for it)` : "") : null);
    if (play.clickAt !== null) {
      $("view-play").setAttribute("data-answer-ms", (performance.now() - play.clickAt).toFixed(1));
      play.clickAt = null;
    }
    $("view-play").setAttribute("data-plies", String(data.moves.length));
  } catch (err) {
    showError("play", err);
    if (play.position) renderPlay(play.position, null);
  } finally {
    play.busy = false;
    play.answers += 1;
    $("view-play").setAttribute("data-answers", String(play.answers));
  }
}

function playMove(uci) {
  if (play.busy) return;
  play.clickAt = performance.now();
  play.moves = play.moves.concat([uci]);
  playBoard.preview(uci);
  engineReply();
}

async function newGame() {
  play.side = $("play-side").value;
  play.started = true;
  playBoard.setFlipped(play.side === "b");
  try {
    const data = await api("/api/position", {});
    showError("play", null);
    renderPlay(data, null);
    $("view-play").setAttribute("data-plies", "0");
    if (play.side === "b") await engineReply();
  } catch (err) {
    showError("play", err);
  }
}

// --- Game review --------------------------------------------------------------

const review = { points: [], data: null, selected: null, startedAt: null };

function showReviewPoint(ply) {
  const point = review.points[ply];
  if (!point) return;
  review.selected = ply;
  const data = review.data;
  reviewBoard.setPosition({ fen: point.fen, legal: [], last_move: ply > 0 ? data.moves[ply - 1] : null,
    check: false });
  reviewBoard.setArrows(point.arrows);
  const parts = [`Position after ${ply} ${ply === 1 ? "ply" : "plies"}: White ${pct(point.white_win, 1)} %.`];
  if (point.played) {
    parts.push(`${moveNumber(data, ply, point.turn)} ${point.played.san} played (${pct(point.played.win_prob, 1)} %),` +
      ` the network prefers ${point.best.san} (${pct(point.best.win_prob, 1)} %).`);
    if (point.mark) parts.push(`${point.mark[0].toUpperCase()}${point.mark.slice(1)}.`);
  } else if (point.terminal) {
    parts.push(point.terminal);
  }
  $("review-caption").textContent = parts.join(" ");
  for (const circle of $("review-graph").querySelectorAll(".point")) {
    const here = Number(circle.getAttribute("data-ply")) === ply;
    circle.classList.toggle("selected", here);
    if (here) {
      const cursor = $("review-cursor");
      cursor.setAttribute("x1", circle.getAttribute("cx"));
      cursor.setAttribute("x2", circle.getAttribute("cx"));
      cursor.removeAttribute("visibility");
    }
  }
}

// "12." or "12..." for the move played from the position after ``ply`` plies.
function moveNumber(data, ply, turn) {
  const whiteFirst = data.fens[0].split(" ")[1] === "w";
  const number = data.first_move_number + Math.floor((whiteFirst ? ply : ply + 1) / 2);
  return turn === "w" ? `${number}.` : `${number}...`;
}

function drawGraph(points) {
  const graph = $("review-graph");
  while (graph.firstChild) graph.removeChild(graph.firstChild);
  const width = 600, height = 180, pad = 8;
  const x = (i) => pad + (points.length > 1 ? i * (width - 2 * pad) / (points.length - 1) : (width - 2 * pad) / 2);
  const y = (p) => pad + (1 - p) * (height - 2 * pad);
  svgEl("rect", { x: 0, y: 0, width, height: height / 2, fill: "#fafafa" }, graph);
  svgEl("rect", { x: 0, y: height / 2, width, height: height / 2, fill: "#e4e4e4" }, graph);
  svgEl("line", { x1: 0, x2: width, y1: y(0.5), y2: y(0.5), stroke: "#999", "stroke-dasharray": "4 3" }, graph);
  svgEl("line", { id: "review-cursor", x1: 0, x2: 0, y1: 0, y2: height, stroke: "#1d4f7a", "stroke-width": 1.5,
    visibility: "hidden", "vector-effect": "non-scaling-stroke" }, graph);
  svgEl("polyline", { points: points.map((p, i) => `${x(i)},${y(p.white_win)}`).join(" "), fill: "none",
    stroke: "#2f3437", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }, graph);
  points.forEach((point, i) => {
    // A judged move is marked at the position it led to.
    const mark = i > 0 ? points[i - 1].mark : null;
    const circle = svgEl("circle", { cx: x(i), cy: y(point.white_win), r: mark ? 5 : 2.5,
      class: "point" + (mark ? ` mark-${mark}` : ""), "data-ply": i, "data-white-win": point.white_win }, graph);
    if (!mark) circle.setAttribute("fill", "#2f3437");
    circle.addEventListener("click", () => showReviewPoint(i));
  });
  graph.setAttribute("data-points", String(points.length));
}

function renderReview(data) {
  review.data = data;
  review.points = data.points;
  drawGraph(data.points);
  const s = data.summary;
  const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  const side = (name, c) => `${name}: ${count(c.inaccuracy, "inaccuracy", "inaccuracies")}, ` +
    `${count(c.mistake, "mistake", "mistakes")}, ${count(c.blunder, "blunder", "blunders")}`;
  $("review-summary").textContent = `${side("White", s.white)}. ${side("Black", s.black)}.`;
  const body = $("review-table").querySelector("tbody");
  body.textContent = "";
  data.points.forEach((point, ply) => {
    if (!point.mark) return;
    const tr = document.createElement("tr");
    tr.className = `mark-${point.mark}`;
    tr.setAttribute("data-ply", String(ply));
    const cells = [moveNumber(data, ply, point.turn), point.played.san, point.mark,
      `${pct(point.best.win_prob, 1)} → ${pct(point.played.win_prob, 1)}`, point.best.san];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => showReviewPoint(ply));
    body.appendChild(tr);
  });
  $("review-status").textContent = `${data.points.length} positions reviewed in ${(data.time_ms / 1000).toFixed(2)} s`;
  showReviewPoint(0);
}

async function runReview() {
  const text = $("review-pgn").value;
  const size = new Blob([JSON.stringify({ model: settings.model, pgn: text })]).size;
  if (size > settings.bodyLimit) {
    showError("review", new Error(`the PGN is ${(size / 1048576).toFixed(1)} MB; the server takes at most ` +
      `${Math.round(settings.bodyLimit / 1024)} KiB (a game's PGN is a few KiB)`));
    return;
  }
  review.startedAt = performance.now();
  $("review-status").textContent = "Reviewing…";
  $("review-run").disabled = true;
  try {
    const data = await api("/api/review", { model: settings.model, pgn: text });
    showError("review", null);
    renderReview(data);
    $("view-review").setAttribute("data-server-ms", String(data.time_ms));
    $("view-review").setAttribute("data-review-ms", (performance.now() - review.startedAt).toFixed(1));
  } catch (err) {
    $("review-status").textContent = "";
    showError("review", err);
  } finally {
    $("review-run").disabled = false;
  }
}

// --- Models -------------------------------------------------------------------

function renderModels(data) {
  const select = $("model");
  select.textContent = "";
  const body = $("models-table").querySelector("tbody");
  body.textContent = "";
  for (const model of data.models) {
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = `${model.label} (${model.source})`;
    select.appendChild(option);
    const tr = document.createElement("tr");
    tr.setAttribute("data-model", model.id);
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "model-choice";
    radio.value = model.id;
    radio.addEventListener("change", () => chooseModel(model.id));
    const first = document.createElement("td");
    first.appendChild(radio);
    tr.appendChild(first);
    for (const value of [model.label, model.source, model.kind, `${model.layers} × ${model.width}`,
      model.parameters.toLocaleString("en")]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function chooseModel(id) {
  settings.model = id;
  $("model").value = id;
  for (const radio of document.querySelectorAll("input[name=model-choice]")) radio.checked = radio.value === id;
  analyse();
}

// --- start ----------------------------------------------------------------------

let analysisBoard, playBoard, reviewBoard;

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  for (const view of document.querySelectorAll(".view")) view.classList.toggle("active", view.id === `view-${name}`);
  if (name === "play" && !play.started) newGame();
}

async function start() {
  const pieces = await (await fetch("/pieces.svg")).text();
  const holder = document.createElement("div");
  holder.style.display = "none";
  holder.innerHTML = pieces;
  document.body.appendChild(holder);

  analysisBoard = new Board($("analysis-board"), analysisMove, "promotion");
  playBoard = new Board($("play-board"), playMove, "play-promotion");
  reviewBoard = new Board($("review-board"), () => {});

  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("model").addEventListener("change", () => chooseModel($("model").value));
  $("fen-load").addEventListener("click", () => loadPosition({ fen: $("fen-input").value }));
  $("fen-input").addEventListener("keydown", (e) => { if (e.key === "Enter") loadPosition({ fen: $("fen-input").value }); });
  $("start-position").addEventListener("click", () => loadPosition({}));
  $("pgn-load").addEventListener("click", () => loadPosition({ pgn: $("pgn-input").value }));
  $("analysis-first").addEventListener("click", () => { analysis.ply = 0; analyse(); });
  $("analysis-back").addEventListener("click", () => { analysis.ply = Math.max(0, analysis.ply - 1); analyse(); });
  $("analysis-forward").addEventListener("click", () => {
    analysis.ply = Math.min(analysis.moves.length, analysis.ply + 1); analyse();
  });
  $("analysis-last").addEventListener("click", () => { analysis.ply = analysis.moves.length; analyse(); });
  $("analysis-flip").addEventListener("click", () => analysisBoard.setFlipped(!analysisBoard.flipped));
  $("analysis-arrows").addEventListener("change", analyse);
  for (const th of $("move-table").querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      if (analysis.sortKey === th.dataset.sort) analysis.sortAsc = !analysis.sortAsc;
      else { analysis.sortKey = th.dataset.sort; analysis.sortAsc = th.dataset.sort === "rank" || th.dataset.sort === "san"; }
      renderMoveTable();
    });
  }
  $("play-new").addEventListener("click", newGame);
  $("play-side").addEventListener("change", newGame);
  $("review-run").addEventListener("click", runReview);
  $("review-file").addEventListener("change", () => {
    const file = $("review-file").files[0];
    if (!file) return;
    if (file.size > settings.bodyLimit) {
      showError("review", new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the server takes at most ` +
        `${Math.round(settings.bodyLimit / 1024)} KiB`));
      return;
    }
    const reader = new FileReader();
    reader.onload = () => { $("review-pgn").value = reader.result; showError("review", null); };
    reader.readAsText(file);
  });

  try {
    const data = await api("/api/models");
    settings.bodyLimit = data.body_limit;
    renderModels(data);
    chooseModel(data.default);
  } catch (err) {
    showError("analysis", err);
  }
  document.body.setAttribute("data-started", "1");
}

start();
