using System.Management.Automation;
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
    private const string ByPath = "ByPath";
    private const string ByLiteralPath = "ByLiteralPath";

    /// <summary>The pool, by name or as a pool object; all file pools when omitted.</summary>
    [Parameter(Position = 0, ParameterSetName = ByPool, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference[]? Pool { get; set; }

    /// <summary>Volume names; wildcards allowed.</summary>
    [Parameter(Position = 1, ParameterSetName = ByPool)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>Image files anywhere; wildcards allowed.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPath)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    /// <summary>Image files anywhere, taken literally (Get-ChildItem output binds here).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLiteralPath, ValueFromPipelineByPropertyName = true)]
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
                        foreach (string file in GetResolvedProviderPathFromPSPath(pattern, out _))
                        {
                            RunForItem(file, () => WriteObject(KvmHost.GetVolumeByPath(file)));
                        }
                    });
                }

                break;
            case ByLiteralPath:
                foreach (string path in LiteralPath)
                {
                    RunForItem(path, () => WriteObject(KvmHost.GetVolumeByPath(GetUnresolvedProviderPathFromPSPath(path))));
                }

                break;
            default:
                WritePoolVolumes();
                break;
        }
    }

    private void WritePoolVolumes()
    {
        IEnumerable<string> pools = Pool?.Select(p => p.Name)
            ?? KvmHost.ListPools().Where(r => r.Pool is { } p && p.Type.HoldsFileVolumes() && p.LocalPath is not null && Directory.Exists(p.LocalPath)).Select(r => r.Pool!.Name);
        foreach (string pool in pools)
        {
            RunForItem(pool, () =>
            {
                if (Name is not null && Name.All(n => !WildcardPattern.ContainsWildcardCharacters(n)))
                {
                    foreach (string name in Name)
                    {
                        RunForItem(name, () => WriteObject(KvmHost.GetVolume(pool, name)));
                    }

                    return;
                }

                var patterns = Name?.Select(n => new WildcardPattern(n, WildcardOptions.None)).ToList();
                foreach (VolumeReadResult result in KvmHost.ListVolumes(pool))
                {
                    string name = System.IO.Path.GetFileName(result.File);
                    if (patterns is not null && !patterns.Exists(p => p.IsMatch(name)))
                    {
                        continue;
                    }

                    if (result.Error is not null)
                    {
                        WriteError(ErrorRecords.From(result.Error, result.File));
                    }
                    else
                    {
                        WriteObject(result.Volume);
                    }
                }
            });
        }
    }
}
