-- Argo CD health of a mlops.dev/v1alpha1 DriftPolicy, read from the status the operator writes.
-- Lua 5.1 with only the base and table libraries (Argo CD's default): no string functions.
local function condition(status, name)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil then
  return {status = "Progressing", message = "waiting for the operator to pick up the DriftPolicy"}
end
if generation ~= nil and status.observedGeneration < generation then
  return {status = "Progressing", message = "the operator has not yet seen generation " .. generation}
end
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = describe(stalled, "stalled")}
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = describe(ready, "")}
end
return {status = "Progressing", message = describe(ready, "waiting for the operator")}
