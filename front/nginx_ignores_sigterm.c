/* nginx ignores SIGTERM: preloaded into nginx by bin/start-nginx (front/start.py).
 *
 * nginx takes SIGTERM as its fast stop: it drops the requests in hand. A platform stops a
 * server with SIGTERM, and Heroku sends it to every process of a dyno at once, nginx's own
 * included, so the front, which stops nginx gracefully (SIGQUIT) once it has closed the port
 * without dropping a connection, would come too late. nginx installs its signal handlers at
 * start (sigaction), so an inherited ignore or signal mask changes nothing; this library, in
 * LD_PRELOAD, turns the handler nginx installs for SIGTERM into an ignore, as Heroku's PHP
 * buildpack does for its nginx. SIGQUIT (graceful) and SIGINT (fast) stop nginx as before.
 * Why this, and what else was weighed: docs/operations.md, "Stopping without losing a request".
 *
 * Built by bin/post_compile.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>

typedef int (*sigaction_function)(int, const struct sigaction *, struct sigaction *);

int sigaction(int number, const struct sigaction *action, struct sigaction *previous)
{
    static sigaction_function real_sigaction;
    struct sigaction ignore;

    if (!real_sigaction)
        real_sigaction = (sigaction_function)dlsym(RTLD_NEXT, "sigaction");
    if (number == SIGTERM && action && ((action->sa_flags & SA_SIGINFO) || action->sa_handler != SIG_DFL)) {
        ignore = *action;
        ignore.sa_flags &= ~SA_SIGINFO;
        ignore.sa_handler = SIG_IGN;
        return real_sigaction(number, &ignore, previous);
    }
    return real_sigaction(number, action, previous);
}
