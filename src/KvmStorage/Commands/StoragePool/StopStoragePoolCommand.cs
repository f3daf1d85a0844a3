using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Stop-StoragePool: stops (deactivates) storage pools; their data is untouched.</summary>
[Cmdlet(VerbsLifecycle.Stop, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class StopStoragePoolCommand : KvmCmdlet
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
                if (ShouldProcess($"{pool.Name} ({pool.Type.ToString().ToLowerInvariant()}, {pool.Path ?? pool.Source.ToString()}) on {KvmHost.Name}", "Stop the storage pool (its data is kept)"))
                {
                    Core.Pools.StoragePool result = KvmHost.StopPool(pool.Name);
                    if (PassThru)
                    {
                        WriteObject(result);
                    }
                }
            });
        }
    }
}
