using System.Management.Automation;
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

    /// <summary>Writes a non-terminating error with the given id, category and target.</summary>
    protected void WriteError(string errorId, ErrorCategory category, string message, object? target) =>
        WriteError(new ErrorRecord(new InvalidOperationException(message), errorId, category, target));

    private static OfflineHost ResolveHost() => OfflineHost.FromEnvironment();
}
