-- Argo CD health of a Portolan ScanJob (portolan.dev/v1alpha1), for the argocd-cm key
-- resource.customizations.health.portolan.dev_ScanJob. Lua 5.1 (Argo CD runs gopher-lua).
--   Pending, Running                      -> Progressing
--   Complete                              -> Healthy
--   Complete, ExpectationsMet=False       -> Degraded, with the condition's message
--   Failed, Rejected                      -> Degraded, with the reason and message
--   Suspended                             -> Suspended
-- A job the operator has not seen yet (no status) is Progressing; so is a Rejected job whose
-- spec changed since the operator rejected it (it will be checked again).
local hs = {status = "Progressing", message = "Waiting for the Portolan operator"}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status
if status == nil or status.phase == nil then
  return hs
end
local phase = status.phase

if phase == "Complete" then
  local met = condition(status, "ExpectationsMet")
  if met ~= nil and met.status == "False" then
    hs.status = "Degraded"
    hs.message = explain(met, "expectations not met")
    return hs
  end
  hs.status = "Healthy"
  hs.message = explain(condition(status, "Complete"), "Complete")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(condition(status, "Failed"), "Failed")
  return hs
end

if phase == "Rejected" then
  local generation = obj.metadata and obj.metadata.generation
  if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
    hs.message = "The spec changed since it was rejected; waiting for the Portolan operator"
    return hs
  end
  hs.status = "Degraded"
  hs.message = explain(condition(status, "Accepted"), "Rejected")
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = explain(condition(status, "Progressing"), "spec.suspend is true")
  return hs
end

-- Pending, Running (and any phase a newer operator may add)
hs.status = "Progressing"
local progressing = condition(status, "Progressing")
hs.message = explain(progressing, phase)
local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.message = hs.message .. " (" .. explain(degraded, "shards failing") .. ")"
end
return hs
