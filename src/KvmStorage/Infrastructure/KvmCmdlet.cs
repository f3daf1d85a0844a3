using System.Collections.Concurrent;
using System.Diagnostics;
using System.Management.Automation;
using System.Reflection;
using KvmStorage.Core.Access;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Live;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Sizes;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>
/// The base of every KvmStorage cmdlet: resolves the session's host and turns core exceptions into
/// error records with a specific id, category and target.
/// </summary>
public abstract class KvmCmdlet : PSCmdlet
{
    private IKvmHost? host;
    private VolumeOperations? volumes;
    private CancellationTokenSource? cancellation;

    private static readonly object ImplicitGate = new();
    private static KvmConnection? implicitSystem;

    /// <summary>
    /// The libvirt connection(s) to work on, as Connect-LibvirtHost emits them. When omitted: the session's default
    /// connection, else <c>qemu:///system</c> when the host root is <c>/</c> and libvirtd's socket exists, else the
    /// offline backend under <c>KVMSTORAGE_ROOT</c>.
    /// </summary>
    [Parameter]
    [ConnectionArgument]
    [ValidateNotNullOrEmpty]
    public KvmConnection[]? Connection { get; set; }

    /// <summary>The host this command works on (see <see cref="Connection"/>).</summary>
    protected IKvmHost KvmHost => host ??= Announce(ResolveHost());

    /// <summary>-Verbose: which host and backend a command works on, and under which root.</summary>
    private IKvmHost Announce(IKvmHost resolved)
    {
        string backend = resolved is OfflineHost ? "offline (libvirt's files)" : "libvirt";
        WriteVerbose($"{MyInvocation.MyCommand.Name}: host {resolved.Name}, {backend} backend, host root {resolved.Paths.Root}.");
        return resolved;
    }

    /// <summary>Every host given with -Connection (for commands that work on several), else the one <see cref="KvmHost"/>.</summary>
    protected IReadOnlyList<IKvmHost> KvmHosts => Connection is { Length: > 1 } several
        ? several.Select(c => (IKvmHost)OpenHost(c)).ToList()
        : [KvmHost];

    /// <summary>The core's one way to every volume file: resolution, containment, write policy, refresh after writes.</summary>
    protected VolumeOperations Volumes => volumes ??= new VolumeOperations(KvmHost);

    /// <summary>A volume argument as the core's resolver takes it (typed paths resolved against the current location).</summary>
    protected VolumeSpec SpecOf(VolumeReference reference)
    {
        ArgumentNullException.ThrowIfNull(reference);
        return reference.ToSpec(GetUnresolvedProviderPathFromPSPath);
    }

    /// <summary>The volume a reference names, read afresh.</summary>
    protected StorageVolume ResolveVolume(VolumeReference reference) => Volumes.Locator.Get(SpecOf(reference));

    /// <summary>A typed path (<c>-Path</c>, <c>-BackingVolume</c>) as the core's resolver takes it.</summary>
    protected VolumeSpec SpecOfPath(string typed) => new VolumeSpec.AtPath(typed, GetUnresolvedProviderPathFromPSPath(typed));

    /// <summary>
    /// The one volume a piped object names (<see cref="VolumeInput"/>): a volume, VM disk, snapshot, file or record
    /// names itself; a name string is a volume of <paramref name="pool"/>. A name without a pool, and a pool object,
    /// are refused (<c>VolumeNotNamed</c>): a cmdlet that works on volumes never widens to a whole pool.
    /// </summary>
    protected VolumeSpec SpecOfInput(object input, string? pool)
    {
        VolumeInput.Item item = VolumeInput.Interpret(input, GetUnresolvedProviderPathFromPSPath);
        string command = MyInvocation.MyCommand.Name;
        return item switch
        {
            { Volume: { } volume } => volume,
            { Name: { } name } when pool is not null => new VolumeSpec.InPool(pool, name),
            { Name: { } name } => throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.VolumeNotNamed, $"'{name}' is a volume name without a pool: give -Pool, or pipe the volume object or a path.", name),
            _ => throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.VolumeNotNamed, $"Pool '{item.Pool!.Name}' is not a volume: {command} never takes a pool for all its volumes (pipe 'Get-Volume -Pool {item.Pool!.Name}' for each of them).", item.Pool!.Name),
        };
    }

    /// <summary>
    /// Expands a wildcard path pattern to the files it matches on this machine: a host-view pattern under the host root.
    /// A pattern matching nothing is the provider's error.
    /// </summary>
    protected IEnumerable<VolumeSpec> ExpandPathPattern(string pattern) =>
        GetResolvedProviderPathFromPSPath(Volumes.Locator.Files.LocalPattern(pattern), out _).Select(f => (VolumeSpec)new VolumeSpec.AtLocalPath(f));

    /// <summary>Cancelled when the user presses Ctrl+C (<see cref="StopProcessing"/>).</summary>
    protected CancellationToken CancellationToken => (cancellation ??= new CancellationTokenSource()).Token;

    protected override void StopProcessing()
    {
        (cancellation ??= new CancellationTokenSource()).Cancel();
        base.StopProcessing();
    }

    /// <summary>
    /// Writes a failure as a non-terminating error with its specific id, category and target; a message that names
    /// files under a sandbox host root names them as the host sees them, as every object does.
    /// </summary>
    protected void WriteError(Exception exception, object? target)
    {
        ErrorRecord record = ErrorRecords.From(exception, target);
        if (host is { Paths: { IsSystemRoot: false } paths })
        {
            string shown = paths.ToHostView(exception.Message);
            if (shown != exception.Message)
            {
                record.ErrorDetails = new ErrorDetails(shown);
            }
        }

        WriteError(record);
    }

    /// <summary>
    /// ShouldProcess for an action more harmful than the cmdlet's usual one, as if this call's ConfirmImpact were
    /// <paramref name="impact"/>: Remove-VMDisk only detaches (Medium) unless -DeleteVolume deletes the image (High);
    /// Resize-Volume grows (Medium) unless -Shrink cuts data off (High). With $ConfirmPreference High (the default)
    /// the harmful action asks, the harmless one does not; -Confirm:$false and -WhatIf behave as usual.
    /// </summary>
    protected bool ShouldProcess(string target, string action, ConfirmImpact impact)
    {
        if (!ShouldProcess(target, action))
        {
            return false;
        }

        ConfirmImpact own = MyInvocation.MyCommand is CmdletInfo { ImplementingType: { } type }
            && Attribute.GetCustomAttribute(type, typeof(CmdletAttribute)) is CmdletAttribute attribute
            ? attribute.ConfirmImpact
            : ConfirmImpact.Medium;
        if (impact <= own || MyInvocation.BoundParameters.ContainsKey("Confirm"))
        {
            // -Confirm (asked already) or -Confirm:$false (never ask); or no more harm than ShouldProcess weighed.
            return true;
        }

        ConfirmImpact preference = GetVariableValue("ConfirmPreference") is ConfirmImpact p ? p
            : Enum.TryParse(GetVariableValue("ConfirmPreference")?.ToString(), ignoreCase: true, out ConfirmImpact parsed) ? parsed : ConfirmImpact.High;

        // ShouldProcess asked when the preference was at or below the cmdlet's impact; ask here only in between.
        bool asked = preference != ConfirmImpact.None && preference <= own;
        bool shouldAsk = preference != ConfirmImpact.None && preference <= impact;
        return asked || !shouldAsk || ShouldContinue($"{action} on target \"{target}\".", "Confirm");
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
            WriteError(ex, target);
        }
        catch (OperationCanceledException)
        {
            throw new PipelineStoppedException();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(ex, target);
        }
    }

    /// <summary>
    /// Runs long image work on a worker thread while this (the pipeline) thread reports its progress with
    /// percent, bytes and time left; Ctrl+C cancels the work through <see cref="CancellationToken"/>.
    /// </summary>
    protected T RunWithProgress<T>(string activity, string description, Func<IProgress<ImageProgress>, CancellationToken, T> work)
    {
        var latest = new LatestProgress();
        CancellationToken token = CancellationToken;
        Task<T> task = Task.Run(() => work(latest, token));

        // Drawn only the newest state, never after the work has ended, and only when it helps: the bar appears once
        // the work has run a second and still has seconds to go (a short command draws nothing), and drawings are
        // spaced by ten times what the last one cost in this process, so a host that draws slowly (a
        // pseudo-terminal that never answers cursor queries takes seconds per drawing, more for the first) costs
        // little: see bench/Invoke-ProgressBenchmark.ps1.
        var record = new ProgressRecord(ActivityId, activity, description);
        var clock = Stopwatch.StartNew();
        TimeSpan nextDraw = FirstDrawAfter;
        bool shown = false;
        WaitHandle done = ((IAsyncResult)task).AsyncWaitHandle;
        try
        {
            while (!done.WaitOne(Max(nextDraw - clock.Elapsed, TimeSpan.FromMilliseconds(10))))
            {
                if (clock.Elapsed < nextDraw || latest.Take() is not { BytesTotal: > 0 } update)
                {
                    continue;
                }

                double fraction = Math.Min(1.0, (double)update.BytesCompleted / update.BytesTotal);
                double rate = update.BytesCompleted / Math.Max(clock.Elapsed.TotalSeconds, 0.001);
                double secondsLeft = rate > 0 ? (update.BytesTotal - update.BytesCompleted) / rate : double.PositiveInfinity;
                TimeSpan cost = LastDrawCost;
                if (!shown && secondsLeft < Math.Max(MinimumSecondsLeft, 4 * cost.TotalSeconds))
                {
                    // Nearly done: a bar now would only delay the end.
                    nextDraw = clock.Elapsed + DrawInterval(cost);
                    continue;
                }

                // A new record each time: in-process hosts keep the ones they were given.
                record = new ProgressRecord(ActivityId, activity, description)
                {
                    PercentComplete = (int)(fraction * 100),
                    SecondsRemaining = double.IsFinite(secondsLeft) ? (int)Math.Min(int.MaxValue, secondsLeft) : -1,
                    StatusDescription = $"{description}: {ByteSize.Format(update.BytesCompleted)} of {ByteSize.Format(update.BytesTotal)} ({ByteSize.Format((ulong)rate)}/s)",
                };
                var drawing = Stopwatch.StartNew();
                WriteProgress(record);
                LastDrawCost = drawing.Elapsed;
                shown = true;
                nextDraw = clock.Elapsed + DrawInterval(LastDrawCost);
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
            WriteProgress(new ProgressRecord(ActivityId, activity, description) { RecordType = ProgressRecordType.Completed });
        }

        if (task.IsCompletedSuccessfully)
        {
            string amount = latest.Last is { BytesTotal: > 0 } last ? $", {ByteSize.Format(last.BytesCompleted)} of {ByteSize.Format(last.BytesTotal)}" : string.Empty;
            WriteVerbose($"{description}: done in {clock.Elapsed.TotalSeconds:0.0} s{amount}.");
        }

        return task.GetAwaiter().GetResult();
    }

    private const int ActivityId = 4711;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>No bar before the work has run this long.</summary>
    private static readonly TimeSpan FirstDrawAfter = TimeSpan.FromSeconds(1);

    /// <summary>No first bar when less than this is left.</summary>
    private const double MinimumSecondsLeft = 3;

    /// <summary>What the last progress drawing took in this process (the host's drawing speed).</summary>
    private static TimeSpan LastDrawCost { get; set; }

    /// <summary>At most four drawings a second, and at most a tenth of the time spent drawing.</summary>
    private static TimeSpan DrawInterval(TimeSpan cost) => Max(TimeSpan.FromMilliseconds(250), cost * 10);

    /// <summary>Keeps only the newest report of the work; the pipeline thread takes it when it is time to draw.</summary>
    private sealed class LatestProgress : IProgress<ImageProgress>
    {
        private readonly object gate = new();
        private ImageProgress? newest;

        /// <summary>The last report of all, taken or not.</summary>
        public ImageProgress? Last { get; private set; }

        public void Report(ImageProgress value)
        {
            lock (gate)
            {
                newest = value;
                Last = value;
            }
        }

        /// <summary>The newest report not taken yet, or null.</summary>
        public ImageProgress? Take()
        {
            lock (gate)
            {
                ImageProgress? taken = newest;
                newest = null;
                return taken;
            }
        }
    }

    /// <summary>An edit of the persistent definition only: a running VM sees it at its next start.</summary>
    /// <summary>A read with -ForceShare of an image a running VM uses says that what it reads may be changing.</summary>
    protected void WarnIfShared(VolumeSpec spec)
    {
        if (!MyInvocation.BoundParameters.ContainsKey("ForceShare"))
        {
            return;
        }

        StorageVolume volume = Volumes.Locator.Get(spec);
        if (volume.AttachedTo.Where(KvmHost.IsDomainActive).ToArray() is { Length: > 0 } running)
        {
            WriteWarning($"'{volume.Path}' is in use by running VM {string.Join(", ", running.Select(v => $"'{v}'"))}: it may change while it is read, so the result is of a moment that may already be past.");
        }
    }

    /// <summary>A conversion that writes an encrypted volume's contents out in the clear says so.</summary>
    protected void WarnIfDecrypting(StorageVolume source, Core.Images.Convert.ConvertOptions options)
    {
        if (source.Encryption is not null && options.Encryption is null)
        {
            WriteWarning($"'{source.Path}' is encrypted, but the output is not: its contents are written in the clear. Add -Encrypt to keep them encrypted.");
        }
    }

    protected void WarnIfActive(string vmName, DeviceScope scope = DeviceScope.Default)
    {
        bool configOnly = KvmHost is OfflineHost || scope == DeviceScope.Config;
        if (configOnly && KvmHost.IsDomainActive(vmName))
        {
            WriteWarning($"VM '{vmName}' is running: the change is in its persistent definition only and takes effect when it is next started.");
        }
    }

    /// <summary>Writes a non-terminating error with the given id, category and target.</summary>
    protected void WriteError(string errorId, ErrorCategory category, string message, object? target) =>
        WriteError(new ErrorRecord(new InvalidOperationException(message), errorId, category, target));

    private IKvmHost ResolveHost()
    {
        if (Connection is { Length: > 1 })
        {
            ThrowTerminatingError(new ErrorRecord(
                new InvalidOperationException($"{MyInvocation.MyCommand.Name} works on one host at a time; give one connection to -Connection."),
                ConnectionErrorIds.MultipleConnections,
                ErrorCategory.InvalidArgument,
                Connection));
        }

        if (Connection is { Length: 1 } one)
        {
            return OpenHost(one[0]);
        }

        if (KvmSession.Default is { } session)
        {
            return session.Host;
        }

        HostPaths paths;
        try
        {
            paths = HostPaths.FromEnvironment();
        }
        catch (KvmStorageException ex)
        {
            ThrowTerminatingError(ErrorRecords.From(ex, null));
            throw;
        }

        if (paths.IsSystemRoot && ImplicitSystemConnection() is { } system)
        {
            return system.Host;
        }

        var offline = new OfflineHost(paths);
        if (IsMutator && KvmConnection.DaemonAnswers(paths))
        {
            // libvirtd reads its XML files when it starts and rewrites them from its own state: each one opens with
            // "WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE OVERWRITTEN AND LOST".
            ThrowTerminatingError(new ErrorRecord(
                new InvalidOperationException($"A libvirt daemon is running for the host root '{paths.Root}', so its files must not be edited offline: the daemon would ignore and later overwrite the change. Connect to it with Connect-LibvirtHost (for example Connect-LibvirtHost -Uri 'qemu:///system?socket={paths.Resolve("/run/libvirt/libvirt-sock")}') and run the command again."),
                ConnectionErrorIds.DaemonRunning,
                ErrorCategory.ResourceBusy,
                paths.Root));
        }

        return offline;
    }

    private LiveHost OpenHost(KvmConnection connection)
    {
        if (!connection.IsOpen)
        {
            ThrowTerminatingError(new ErrorRecord(
                new InvalidOperationException($"The connection to '{connection.Uri}' was closed. Open a new one with Connect-LibvirtHost."),
                LibvirtErrorIds.ConnectionClosed,
                ErrorCategory.ResourceUnavailable,
                connection));
        }

        return connection.Host;
    }

    /// <summary>qemu:///system, opened once per process, when the system daemon's socket exists and libvirt loads.</summary>
    private static KvmConnection? ImplicitSystemConnection()
    {
        lock (ImplicitGate)
        {
            if (implicitSystem is { IsOpen: true })
            {
                return implicitSystem;
            }

            if (!File.Exists("/run/libvirt/libvirt-sock") || !LibvirtLibrary.IsAvailable)
            {
                return null;
            }

            try
            {
                implicitSystem = KvmConnection.Open("qemu:///system");
                return implicitSystem;
            }
            catch (KvmStorageException)
            {
                // Not allowed or not answering: the offline backend still reads the files.
                return null;
            }
        }
    }

    private bool IsMutator => GetType().GetCustomAttribute<CmdletAttribute>()?.SupportsShouldProcess ?? false;
}
