using System.Runtime.ExceptionServices;

namespace KvmStorage.Core.Images.Block;

/// <summary>Two reads at once (block readers are safe to share between threads): one on the thread pool, one here.</summary>
internal static class SideBySide
{
    /// <summary>
    /// Runs <paramref name="first"/> on the thread pool and <paramref name="second"/> on this thread, and returns only
    /// when both have ended (callers reuse the buffers they fill); a failure of either is rethrown, the first's first.
    /// </summary>
    public static void Run(Action first, Action second)
    {
        Task running = Task.Run(first);
        ExceptionDispatchInfo? failure = null;
        try
        {
            second();
        }
        catch (Exception e)
        {
            failure = ExceptionDispatchInfo.Capture(e);
        }

        running.GetAwaiter().GetResult();
        failure?.Throw();
    }
}
