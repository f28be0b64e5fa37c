"""sim_client: evaluate any policy server on LIBERO (torch-free; talks only through vla.wire).

Modules: suites (tasks, init states, LIBERO config), env (render-on-query env), episode
(openpi's episode loop), policy (request layout, remote and local policies), worker/pool
(spawned simulator processes), results/report/video (outputs), cli.
"""
