using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Update-StoragePool: makes libvirt re-read a pool's volumes and space (pool-refresh).</summary>
[Cmdlet(VerbsData.Update, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class UpdateStoragePoolCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ByObject = "ByObject";

    /// <summary>Names of the pools.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [Alias("PoolName")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>The pools as Get-StoragePool emits them.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Pools.StoragePool[] InputObject { get; set; } = [];

    /// <summary>Emit the pool afterwards.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        IEnumerable<string> names = ParameterSetName == ByObject ? InputObject.Select(p => p.Name) : Name;
        foreach (string name in names)
        {
            RunForItem(name, () =>
            {
                Core.Pools.StoragePool pool = KvmHost.GetPool(name);
                if (ShouldProcess($"{pool.Name} ({pool.Type.ToString().ToLowerInvariant()}, {pool.Path ?? pool.Source.ToString()}) on {KvmHost.Name}", "Refresh the storage pool"))
                {
                    Core.Pools.StoragePool result = KvmHost.RefreshPool(pool.Name);
                    if (PassThru)
                    {
                        WriteObject(result);
                    }
                }
            });
        }
    }
}
