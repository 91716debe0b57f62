-- Argo CD health of a Portolan ScanSchedule (portolan.dev/v1alpha1), for the argocd-cm key
-- resource.customizations.health.portolan.dev_ScanSchedule. Lua 5.1 (Argo CD runs gopher-lua).
--   not yet seen by the operator, or spec changed since  -> Progressing
--   Accepted=False (invalid schedule or job template)      -> Degraded, with the message
--   spec.suspend: true                                     -> Suspended
--   Drifted=True (the last two runs differ in open ports)  -> Degraded, with the message
--   otherwise                                              -> Healthy (the next run time as message)
-- A schedule's runs are ScanJobs with their own health; a failed run shows there.
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

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the Portolan operator to see generation " .. generation
  return hs
end

local accepted = condition(status, "Accepted")
if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = accepted.reason .. ": " .. (accepted.message or "")
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true"
  return hs
end

local drifted = condition(status, "Drifted")
if drifted ~= nil and drifted.status == "True" then
  hs.status = "Degraded"
  hs.message = drifted.reason .. ": " .. (drifted.message or "")
  return hs
end

hs.status = "Healthy"
if status.nextScheduleTime ~= nil then
  hs.message = "Next run at " .. status.nextScheduleTime
else
  hs.message = "Scheduled"
end
return hs
