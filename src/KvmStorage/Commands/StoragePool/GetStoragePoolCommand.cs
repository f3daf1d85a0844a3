using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Pools;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Get-StoragePool: lists the storage pools defined on the host.</summary>
[Cmdlet(VerbsCommon.Get, "StoragePool", DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class GetStoragePoolCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByInput = "ByInput";
    private static readonly string[] NameProperties = ["Pool", "PoolName", "Name"];

    /// <summary>Pool names; wildcards allowed. All pools when omitted.</summary>
    [Parameter(Position = 0, ParameterSetName = ByName)]
    [Alias("PoolName")]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public string[]? Name { get; set; }

    /// <summary>
    /// Objects from the pipeline, each naming one pool: a pool, a volume or a VM disk or a snapshot (the pool that holds
    /// it), a string (a pool name), or a record with a Pool (or PoolName, or Name) property.
    /// </summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ByInput)]
    public PSObject[] InputObject { get; set; } = [];

    protected override void ProcessRecord()
    {
        if (ParameterSetName == ByInput)
        {
            foreach (PSObject input in InputObject)
            {
                RunForItem(input, () =>
                {
                    ListPools(KvmHost, [PoolNameOf(input)]);
                });
            }

            return;
        }

        foreach (Core.Backends.IKvmHost host in KvmHosts)
        {
            ListPools(host, Name);
        }
    }

    private static string PoolNameOf(PSObject input)
    {
        object value = input.BaseObject;
        string? name = value switch
        {
            Core.Pools.StoragePool pool => pool.Name,
            Core.Volumes.StorageVolume volume => volume.Pool ?? throw NotInPool(volume.Path),
            Core.Domains.VMDisk disk => disk.Pool ?? disk.Volume?.Pool ?? throw NotInPool(disk.Source ?? disk.ToString()),
            Core.Volumes.VolumeSnapshot snapshot => snapshot.Pool ?? throw NotInPool(snapshot.Path),
            string text => text,
            _ => null,
        };
        name ??= NameProperties.Select(p => input.Properties[p]?.Value?.ToString()).FirstOrDefault(v => !string.IsNullOrEmpty(v));
        return name ?? throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.InputNotRecognized, $"The input object ({value.GetType().Name}) names no storage pool (no Pool or Name property).", value);
    }

    private static KvmStorageException NotInPool(string what) =>
        new(ErrorKind.NotFound, PoolErrorIds.PoolNotFound, $"'{what}' is not in a storage pool.", what);

    private void ListPools(Core.Backends.IKvmHost host, string[]? names)
    {
        RunForItem(host.Name, () =>
        {
            IReadOnlyList<PoolReadResult> all = host.ListPools();
            foreach (PoolReadResult broken in all.Where(r => r.Error is not null))
            {
                // One bad file is reported and the other pools are still listed.
                WriteError(broken.Error!, broken.File);
            }

            var pools = all.Where(r => r.Pool is not null).Select(r => r.Pool!).ToList();
            if (names is null)
            {
                pools.ForEach(WriteObject);
                return;
            }

            foreach (string name in names)
            {
                if (WildcardPattern.ContainsWildcardCharacters(name))
                {
                    var pattern = new WildcardPattern(name, WildcardOptions.IgnoreCase);
                    pools.Where(p => pattern.IsMatch(p.Name)).ToList().ForEach(WriteObject);
                }
                else
                {
                    Core.Pools.StoragePool? pool = pools.Find(p => p.Name == name);
                    if (pool is null)
                    {
                        RunForItem(name, () => WriteObject(host.GetPool(name)));
                    }
                    else
                    {
                        WriteObject(pool);
                    }
                }
            }
        });
    }
}
