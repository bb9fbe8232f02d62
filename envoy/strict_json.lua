-- Strict request bodies and query strings for the REST surface: an unknown JSON field anywhere in a body, a
-- query parameter that is not one of the route's own, a field or query parameter given twice, or a boolean
-- field holding anything but true / false is a 400 naming it.
--
-- Envoy's gRPC-JSON transcoder drops fields the target message does not define, so a typo such as
-- "maxOrderUSD" for "maxOrderUsd" would be accepted and ignored; it keeps the last of two equal keys (or
-- merges two objects), reads "no" or "0" as a bool and keeps the last of two equal query parameters. It also
-- binds a query parameter to ANY field of the request message, after the path and the body: ?id= would
-- retarget DELETE /subscriptions/{id} at another subscription, ?subscription.label= would set a body field
-- past this check. This filter runs just before the transcoder on the whole (already size-capped) body.
-- tools/envoy_lua.py prepends ROUTES and MESSAGES, generated from the descriptor set's google.api.http
-- annotations:
--   ROUTES   = { {verb, {segment | false (one-segment variable) | true (rest of path)}, body message | false,
--                 { [json or proto path of one of the route's query parameters] = canonical (JSON) path }}, ... }
--              most literal first; body false: the route takes no body.
--   MESSAGES = { [message full name] = { [json name or proto name] = {kind, canonical name} } }
--              kind: false (a scalar or free-form JSON, not looked into), true (a singular bool: JSON true
--              or false only), "<message full name>" (an object, or an array of them), or { kind } (a map whose values
--              are of that kind). Both spellings of a field share its canonical (JSON) name.
-- Only strict JSON (RFC 8259) passes: anything this parser refuses is a 400 too, so the transcoder never
-- reads a key this filter did not check. Other field types are left to the transcoder, values to the service.

local byte, find, sub, char, concat = string.byte, string.find, string.sub, string.char, table.concat
local MAX_DEPTH = 64
local NO_BODY = {}
local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
                 [116] = "\t"}

local function fail(message)
  error({message}, 0)
end

local function shown(key)
  if key == "" then return '""' end
  local text = key:gsub("[^\32-\126]", "?")
  if #text > 64 then text = sub(text, 1, 61) .. "..." end
  return text
end

local function join(path, key)
  if path == "" then return shown(key) end
  return path .. "." .. shown(key)
end

local function malformed(why, at)
  fail("body: not valid JSON (" .. why .. " at byte " .. (at - 1) .. ")")
end

local function ws(s, i)
  local _, e = find(s, "^[ \t\r\n]*", i)
  return e + 1
end

-- A string starting at s[i] == '"'; returns its decoded text (only when want) and the index after it.
local function str(s, i, want)
  local parts = want and {} or nil
  local j = i + 1
  while true do
    local k = find(s, '[%z\1-\31"\\]', j)
    if not k then malformed("unterminated string", i) end
    if parts then parts[#parts + 1] = sub(s, j, k - 1) end
    local c = byte(s, k)
    if c == 34 then return parts and concat(parts) or nil, k + 1 end
    if c ~= 92 then malformed("control character in a string", k) end
    local e = byte(s, k + 1)
    if e == 117 then
      local hex = sub(s, k + 2, k + 5)
      if not find(hex, "^%x%x%x%x$") then malformed("bad \\u escape", k) end
      local code = tonumber(hex, 16)
      -- field names are ASCII: anything else only has to stay unequal to every name
      if parts then parts[#parts + 1] = code < 128 and char(code) or "\255" end
      j = k + 6
    elseif e and ESCAPES[e] then
      if parts then parts[#parts + 1] = ESCAPES[e] end
      j = k + 2
    else
      malformed("bad escape", k)
    end
  end
end

local function num(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local c = byte(s, j)
  if c == 48 then
    j = j + 1
  elseif c and c >= 49 and c <= 57 then
    local _, e = find(s, "^%d*", j + 1)
    j = e + 1
  else
    malformed("bad number", i)
  end
  if byte(s, j) == 46 then
    local _, e = find(s, "^%d+", j + 1)
    if not e then malformed("bad number", i) end
    j = e + 1
  end
  c = byte(s, j)
  if c == 101 or c == 69 then
    local _, e = find(s, "^[-+]?%d+", j + 1)
    if not e then malformed("bad number", i) end
    j = e + 1
  end
  return j
end

local walk

local function object(s, i, kind, path, depth)
  local fields, is_map, values = nil, false, false
  if kind == NO_BODY then
    fields = NO_BODY
  elseif type(kind) == "string" then
    fields = MESSAGES[kind]
  elseif type(kind) == "table" then
    is_map, values = true, kind[1]
  end
  local seen = fields and {} or nil
  i = ws(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then malformed("expected a quoted field name", i) end
    local key
    key, i = str(s, i, fields ~= nil or is_map)
    local child, child_path = false, path
    if fields then
      local field = fields[key]
      child_path = join(path, key)
      if field == nil then fail(child_path .. ": unknown field") end
      if seen[field[2]] then fail(child_path .. ": duplicate field") end
      seen[field[2]] = true
      child = field[1]
    elseif is_map then
      child = values
      child_path = join(path, key)
    end
    i = ws(s, i)
    if byte(s, i) ~= 58 then malformed("expected ':'", i) end
    i = ws(s, walk(s, ws(s, i + 1), child, child_path, depth))
    local c = byte(s, i)
    if c == 44 then
      i = ws(s, i + 1)
    elseif c == 125 then
      return i + 1
    else
      malformed("expected ',' or '}'", i)
    end
  end
end

local function array(s, i, kind, path, depth)
  i = ws(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end
  local n = 0
  while true do
    i = ws(s, walk(s, i, kind, path .. "[" .. n .. "]", depth))
    n = n + 1
    local c = byte(s, i)
    if c == 44 then
      i = ws(s, i + 1)
    elseif c == 93 then
      return i + 1
    else
      malformed("expected ',' or ']'", i)
    end
  end
end

walk = function(s, i, kind, path, depth)
  local c = byte(s, i)
  if kind == true then
    if sub(s, i, i + 3) == "true" then return i + 4 end
    if sub(s, i, i + 4) == "false" then return i + 5 end
    fail(path .. ": must be true or false")
  end
  if c == 123 or c == 91 then
    if depth >= MAX_DEPTH then fail("body: nested deeper than " .. MAX_DEPTH .. " levels") end
    if c == 123 then return object(s, i, kind, path, depth + 1) end
    return array(s, i, kind, path, depth + 1)
  elseif c == 34 then
    local _, j = str(s, i, false)
    return j
  elseif c == 45 or (c and c >= 48 and c <= 57) then
    return num(s, i)
  end
  for _, word in ipairs({"true", "false", "null"}) do
    if sub(s, i, i + #word - 1) == word then return i + #word end
  end
  if c == nil then malformed("unexpected end", i) end
  malformed("unexpected character", i)
end

-- nil when the body is acceptable for a route whose body is read as ``kind``, else the 400's message.
local function check(s, kind)
  local ok, err = pcall(function()
    local i = ws(s, 1)
    if i > #s then return end
    if kind == NO_BODY and byte(s, i) ~= 123 then fail("body: this route takes no request body") end
    i = ws(s, walk(s, i, kind, "", 0))
    if i <= #s then malformed("data after the JSON value", i) end
  end)
  if ok then return nil end
  if type(err) == "table" then return err[1] end
  return "body: could not be read"
end

local function decoded(text)
  return (text:gsub("%%(%x%x)", function(hex) return char(tonumber(hex, 16)) end))
end

-- nil when every query parameter is one of the route's own (its name %-decoded, either spelling) and none is
-- given twice, else the 400's message.
local function query_problem(path, own)
  local q = find(path, "?", 1, true)
  if q == nil then return nil end
  local seen = {}
  for part in sub(path, q + 1):gmatch("[^&]+") do
    local name = decoded(part:match("^[^=]*"))
    local canonical = own[name]
    if canonical == nil then return shown(name) .. ": unknown query parameter" end
    if seen[canonical] then return shown(name) .. ": query parameter given more than once" end
    seen[canonical] = true
  end
  return nil
end

local function route_for(verb, path)
  local q = find(path, "?", 1, true)
  if q then path = sub(path, 1, q - 1) end
  local segments = {}
  for segment in path:gmatch("[^/]+") do segments[#segments + 1] = segment end
  for _, route in ipairs(ROUTES) do
    if route[1] == verb then
      local template, matched = route[2], true
      for k = 1, math.max(#template, #segments) do
        local want = template[k]
        if want == true then break end
        local got = segments[k]
        if got == nil or want == nil or (want ~= false and want ~= got) then
          matched = false
          break
        end
      end
      if matched then return route end
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or ""
  local route = route_for(headers:get(":method"), path)
  if route == nil then return end
  local refused = query_problem(path, route[4])
  if refused then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"}, refused)
    return
  end
  local body = handle:body()
  if body == nil then return end
  local size = body:length()
  if size == 0 then return end
  local kind = route[3]
  if kind == false then kind = NO_BODY end
  local problem = check(body:getBytes(0, size), kind)
  if problem then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"}, problem)
  end
end
