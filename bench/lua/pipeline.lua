-- 16 requests per write: the server's own cost decides, not wrk's.
local depth = 16
init = function()
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
