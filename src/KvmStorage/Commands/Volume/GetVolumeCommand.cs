using System.Management.Automation;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Get-Volume: lists the volumes of pools, or inspects image files anywhere.</summary>
[Cmdlet(VerbsCommon.Get, "Volume", DefaultParameterSetName = ByPool)]
[OutputType(typeof(StorageVolume))]
public sealed class GetVolumeCommand : KvmCmdlet
{
    private const string ByPool = "ByPool";
    private const string ByInput = "ByInput";
    private const string ByPath = "ByPath";
    private const string ByLiteralPath = "ByLiteralPath";

    /// <summary>The pools, by name (wildcards allowed) or as pool objects; all file pools when omitted.</summary>
    [Parameter(Position = 0, ParameterSetName = ByPool)]
    [Parameter(ParameterSetName = ByInput)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference[]? Pool { get; set; }

    /// <summary>Volume names; wildcards allowed.</summary>
    [Parameter(Position = 1, ParameterSetName = ByPool)]
    [Parameter(ParameterSetName = ByInput)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>
    /// Objects from the pipeline, each naming exactly what it is: a pool object (its volumes), a volume, a VM disk (its
    /// image), a snapshot (its volume), a file from Get-ChildItem, a string (a volume name, in -Pool or in every pool),
    /// or a record with Pool and Name (or Path) properties. A record that names a pool but no volume is refused.
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ByInput)]
    public PSObject[] InputObject { get; set; } = [];

    /// <summary>Image files (host paths, or local paths under the host root); wildcards allowed.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPath)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    /// <summary>Image files, taken literally.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLiteralPath)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    protected override void ProcessRecord()
    {
        switch (ParameterSetName)
        {
            case ByPath:
                foreach (string pattern in Path)
                {
                    RunForItem(pattern, () =>
                    {
                        foreach (Core.Access.VolumeSpec file in ExpandPathPattern(pattern))
                        {
                            RunForItem(file.ToString(), () => WriteObject(Volumes.Locator.Get(file)));
                        }
                    });
                }

                break;
            case ByLiteralPath:
                foreach (string path in LiteralPath)
                {
                    RunForItem(path, () => WriteObject(Volumes.Locator.Get(SpecOfPath(path))));
                }

                break;
            case ByInput:
                foreach (PSObject input in InputObject)
                {
                    RunForItem(input, () =>
                    {
                        VolumeInput.Item item = VolumeInput.Interpret(input, GetUnresolvedProviderPathFromPSPath);
                        if (item.Volume is not null)
                        {
                            WriteObject(Volumes.Locator.Get(item.Volume));
                        }
                        else if (item.Pool is not null)
                        {
                            WritePoolVolumes([item.Pool.Name], Name);
                        }
                        else
                        {
                            WritePoolVolumes(Pool?.Select(p => p.Name), [item.Name!]);
                        }
                    });
                }

                break;
            default:
                WritePoolVolumes(Pool?.Select(p => p.Name), Name);
                break;
        }
    }

    private void WritePoolVolumes(IEnumerable<string>? pools, string[]? names)
    {
        // A literal name asked of one pool is looked up there (VolumeNotFound when missing); asked of every pool or
        // of a pattern of pools, it is matched in each and reported missing only when none of them has it.
        List<string>? asked = pools?.ToList();
        bool everyPool = asked is null || asked.Exists(WildcardPattern.ContainsWildcardCharacters);
        // Listed once, however many patterns match against it.
        var filePools = new Lazy<List<string>>(() => [.. KvmHost.ListFilePools().Select(p => p.Name)]);

        // Pool names may be patterns (as on Get-StoragePool): each matches the pools that hold files; none is no error.
        pools = asked is null
            ? filePools.Value
            : asked.SelectMany(p => WildcardPattern.ContainsWildcardCharacters(p)
                ? filePools.Value.Where(new WildcardPattern(p, WildcardOptions.IgnoreCase).IsMatch)
                : [p]).Distinct(StringComparer.Ordinal).ToList();
        var found = new HashSet<string>(StringComparer.Ordinal);
        foreach (string pool in pools)
        {
            RunForItem(pool, () =>
            {
                if (!everyPool && names is not null && names.All(n => !WildcardPattern.ContainsWildcardCharacters(n)))
                {
                    foreach (string name in names)
                    {
                        RunForItem(name, () => WriteObject(KvmHost.GetVolume(pool, name)));
                    }

                    return;
                }

                var patterns = names?.Select(n => new WildcardPattern(n, WildcardOptions.None)).ToList();
                foreach (VolumeReadResult result in KvmHost.ListVolumes(pool))
                {
                    string name = System.IO.Path.GetFileName(result.File);
                    if (patterns is not null && !patterns.Exists(p => p.IsMatch(name)))
                    {
                        continue;
                    }

                    found.Add(name);
                    if (result.Error is not null)
                    {
                        WriteError(result.Error, result.File);
                    }
                    else
                    {
                        WriteObject(result.Volume);
                    }
                }
            });
        }

        foreach (string missing in everyPool ? names?.Where(n => !WildcardPattern.ContainsWildcardCharacters(n) && !found.Contains(n)) ?? [] : [])
        {
            WriteError(new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, VolumeErrorIds.VolumeNotFound, $"No storage pool has a volume named '{missing}'.", missing), missing);
        }
    }
}
