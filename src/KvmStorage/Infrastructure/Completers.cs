using System.Collections;
using System.Management.Automation.Language;
using System.Management.Automation;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Pools;

namespace KvmStorage.Infrastructure;

/// <summary>Tab completion of pool names on the session's host.</summary>
public sealed class PoolNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        IEnumerable<string> names;
        try
        {
            names = Completion.Host().ListPools().Where(r => r.Pool is not null).Select(r => r.Pool!.Name);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Core.Errors.KvmStorageException)
        {
            names = [];
        }

        return Completion.For(names, wordToComplete);
    }
}

/// <summary>Tab completion of volume names, in the pool named by -Pool when given, else in every file pool.</summary>
public sealed class VolumeNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var names = new List<string>();
        try
        {
            var host = Completion.Host();
            string? pool = fakeBoundParameters?["Pool"] switch
            {
                string s => s,
                PSObject { BaseObject: Core.Pools.StoragePool p } => p.Name,
                Core.Pools.StoragePool p => p.Name,
                _ => null,
            };
            IEnumerable<string> pools = pool is not null
                ? [pool]
                : host.ListPools().Where(r => r.Pool is { } p && p.PoolType.HoldsFileVolumes()).Select(r => r.Pool!.Name);
            foreach (string p in pools)
            {
                string? folder = host.GetPool(p).LocalPath;
                if (folder is not null && Directory.Exists(folder))
                {
                    names.AddRange(Directory.EnumerateFiles(folder).Select(Path.GetFileName).Where(n => n is not null && !n.StartsWith(Core.IO.AtomicFile.TempPrefix, StringComparison.Ordinal))!);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Core.Errors.KvmStorageException)
        {
        }

        return Completion.For(names.Distinct(), wordToComplete);
    }
}

/// <summary>Tab completion of VM (domain) names on the session's host.</summary>
public sealed class VMNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        IEnumerable<string> names;
        try
        {
            names = Completion.Host().ListDomains().Where(d => d.Definition is not null).Select(d => d.Name);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Core.Errors.KvmStorageException)
        {
            names = [];
        }

        return Completion.For(names, wordToComplete);
    }
}

/// <summary>Tab completion of disk targets (vda, sdb, ...) of the VM named by -VMName, else of every VM.</summary>
public sealed class DiskTargetCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var targets = new List<string>();
        try
        {
            IKvmHost host = Completion.Host();
            IEnumerable<string> vms = fakeBoundParameters?["VMName"] switch
            {
                string name => [name],
                IEnumerable names and not string => names.Cast<object>().Select(n => n?.ToString() ?? string.Empty),
                _ => host.ListDomains().Where(d => d.Definition is not null).Select(d => d.Name),
            };
            foreach (string vm in vms.Where(v => v.Length > 0 && !WildcardPattern.ContainsWildcardCharacters(v)))
            {
                targets.AddRange(host.GetDomain(vm).Disks.Select(d => d.Target));
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Core.Errors.KvmStorageException)
        {
        }

        return Completion.For(targets.Distinct(StringComparer.Ordinal), wordToComplete);
    }
}

/// <summary>Tab completion of the internal snapshot names of the qcow2 volume given by -Volume (a path or an object).</summary>
public sealed class SnapshotNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        IEnumerable<string> names = [];
        try
        {
            object? given = fakeBoundParameters?["Volume"];
            given = given is PSObject pso ? pso.BaseObject : given;
            Core.Access.VolumeSpec? spec = given switch
            {
                Core.Volumes.StorageVolume volume => Core.Access.VolumeSpec.Of(volume),
                string path when path.Length > 0 => new Core.Access.VolumeSpec.AtPath(path, Path.GetFullPath(path)),
                _ => null,
            };
            if (spec is not null)
            {
                names = new Core.Access.VolumeLocator(Completion.Host()).Get(spec).Snapshots.Select(s => s.Name);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Core.Errors.KvmStorageException or ArgumentException)
        {
        }

        return Completion.For(names, wordToComplete);
    }
}

internal static class Completion
{
    /// <summary>The session's default connection when there is one, else the offline host.</summary>
    public static IKvmHost Host() => KvmSession.Default is { } connection ? connection.Host : OfflineHost.FromEnvironment();

    /// <summary>Matches names against the typed prefix and quotes those that need it.</summary>
    public static IEnumerable<CompletionResult> For(IEnumerable<string> names, string wordToComplete)
    {
        string prefix = (wordToComplete ?? string.Empty).Trim('\'', '"');
        var pattern = new WildcardPattern(prefix + "*", WildcardOptions.IgnoreCase);
        foreach (string name in names.Where(n => pattern.IsMatch(n)).Order(StringComparer.OrdinalIgnoreCase))
        {
            bool quote = name.IndexOfAny([' ', '\'', '"', '$', '`', ';', '(', ')', '{', '}', '&', '|', ',', '@', '#']) >= 0;
            string text = quote ? "'" + name.Replace("'", "''", StringComparison.Ordinal) + "'" : name;
            yield return new CompletionResult(text, name, CompletionResultType.ParameterValue, name);
        }
    }
}
