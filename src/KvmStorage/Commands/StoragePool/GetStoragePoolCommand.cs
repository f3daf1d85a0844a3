using System.Management.Automation;
using KvmStorage.Core.Pools;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Get-StoragePool: lists the storage pools defined on the host.</summary>
[Cmdlet(VerbsCommon.Get, "StoragePool")]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class GetStoragePoolCommand : KvmCmdlet
{
    /// <summary>Pool names; wildcards allowed. All pools when omitted.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("PoolName")]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        foreach (Core.Hosting.IKvmHost host in KvmHosts)
        {
            ListPools(host);
        }
    }

    private void ListPools(Core.Hosting.IKvmHost host)
    {
        RunForItem(host.Name, () =>
        {
            IReadOnlyList<PoolReadResult> all = host.ListPools();
            foreach (PoolReadResult broken in all.Where(r => r.Error is not null))
            {
                // One bad file is reported and the other pools are still listed.
                WriteError(ErrorRecords.From(broken.Error!, broken.File));
            }

            var pools = all.Where(r => r.Pool is not null).Select(r => r.Pool!).ToList();
            if (Name is null)
            {
                pools.ForEach(WriteObject);
                return;
            }

            foreach (string name in Name)
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
