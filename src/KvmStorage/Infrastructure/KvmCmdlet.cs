using System.Collections.Concurrent;
using System.Diagnostics;
using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Sizes;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;

namespace KvmStorage.Infrastructure;

/// <summary>
/// The base of every KvmStorage cmdlet: resolves the session's host and turns core exceptions into
/// error records with a specific id, category and target.
/// </summary>
public abstract class KvmCmdlet : PSCmdlet
{
    private IKvmHost? host;
    private CancellationTokenSource? cancellation;

    /// <summary>The host this command works on (offline under <c>KVMSTORAGE_ROOT</c>, else <c>/</c>).</summary>
    protected IKvmHost KvmHost => host ??= ResolveHost();

    /// <summary>Cancelled when the user presses Ctrl+C (<see cref="StopProcessing"/>).</summary>
    protected CancellationToken CancellationToken => (cancellation ??= new CancellationTokenSource()).Token;

    protected override void StopProcessing()
    {
        (cancellation ??= new CancellationTokenSource()).Cancel();
        base.StopProcessing();
    }

    /// <summary>Runs one item's work; a core failure becomes a non-terminating error for that item and the pipeline goes on.</summary>
    protected void RunForItem(object? target, Action action)
    {
        try
        {
            action();
        }
        catch (KvmStorageException ex)
        {
            WriteError(ErrorRecords.From(ex, target));
        }
        catch (OperationCanceledException)
        {
            throw new PipelineStoppedException();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(ErrorRecords.From(ex, target));
        }
    }

    /// <summary>
    /// Runs long image work on a worker thread while this (the pipeline) thread reports its progress with
    /// percent, bytes and time left; Ctrl+C cancels the work through <see cref="CancellationToken"/>.
    /// </summary>
    protected T RunWithProgress<T>(string activity, string description, Func<IProgress<ImageProgress>, CancellationToken, T> work)
    {
        using var updates = new BlockingCollection<ImageProgress>();
        var reporter = new QueueProgress(updates);
        CancellationToken token = CancellationToken;
        Task<T> task = Task.Run(() =>
        {
            try
            {
                return work(reporter, token);
            }
            finally
            {
                updates.CompleteAdding();
            }
        });

        var record = new ProgressRecord(ActivityId, activity, description);
        var clock = Stopwatch.StartNew();
        TimeSpan nextUpdate = TimeSpan.Zero;
        bool shown = false;
        try
        {
            foreach (ImageProgress update in updates.GetConsumingEnumerable())
            {
                if (clock.Elapsed < nextUpdate || update.BytesTotal == 0)
                {
                    continue;
                }

                nextUpdate = clock.Elapsed + TimeSpan.FromMilliseconds(250);
                double fraction = Math.Min(1.0, (double)update.BytesCompleted / update.BytesTotal);
                record.PercentComplete = (int)(fraction * 100);
                double rate = update.BytesCompleted / Math.Max(clock.Elapsed.TotalSeconds, 0.001);
                record.SecondsRemaining = rate > 0 ? (int)Math.Min(int.MaxValue, (update.BytesTotal - update.BytesCompleted) / rate) : -1;
                record.StatusDescription = $"{description}: {ByteSize.Format(update.BytesCompleted)} of {ByteSize.Format(update.BytesTotal)} ({ByteSize.Format((ulong)rate)}/s)";
                WriteProgress(record);
                shown = true;
            }
        }
        catch
        {
            // The pipeline thread failed (or was stopped) while the work runs: stop the work and let it clean up.
            cancellation?.Cancel();
            try
            {
                task.Wait();
            }
            catch (AggregateException)
            {
            }

            throw;
        }

        if (shown)
        {
            record.RecordType = ProgressRecordType.Completed;
            WriteProgress(record);
        }

        return task.GetAwaiter().GetResult();
    }

    private const int ActivityId = 4711;

    private sealed class QueueProgress(BlockingCollection<ImageProgress> queue) : IProgress<ImageProgress>
    {
        public void Report(ImageProgress value) => queue.TryAdd(value);
    }

    /// <summary>An offline edit changes only the persistent definition; a running VM sees it at its next start.</summary>
    protected void WarnIfActive(string vmName)
    {
        if (KvmHost.IsDomainActive(vmName))
        {
            WriteWarning($"VM '{vmName}' is running: the change is in its persistent definition only and takes effect when it is next started.");
        }
    }

    /// <summary>Writes a non-terminating error with the given id, category and target.</summary>
    protected void WriteError(string errorId, ErrorCategory category, string message, object? target) =>
        WriteError(new ErrorRecord(new InvalidOperationException(message), errorId, category, target));

    private static OfflineHost ResolveHost() => OfflineHost.FromEnvironment();
}
