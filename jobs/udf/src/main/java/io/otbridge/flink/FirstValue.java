package io.otbridge.flink;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * {@code first_non_null(x)}, as jobs/downsample registers it: the first non-null value in
 * arrival order, as the built-in FIRST_VALUE, for DOUBLE and STRING. Unlike the built-in it
 * can {@link #merge}, which lets the planner split a window aggregate into a local phase
 * (beside the source) and a global one: partial accumulators cross the keyed exchange instead
 * of every row. Merging in the order the partials arrive keeps the arrival order, since a
 * key's partials come from one upstream task, in order.
 */
@FunctionHint(input = @DataTypeHint("DOUBLE"), output = @DataTypeHint("DOUBLE"),
    accumulator = @DataTypeHint("ROW<v DOUBLE>"))
@FunctionHint(input = @DataTypeHint("STRING"), output = @DataTypeHint("STRING"),
    accumulator = @DataTypeHint("ROW<v STRING>"))
public class FirstValue extends AggregateFunction<Object, Row> {
  private static final long serialVersionUID = 1L;

  @Override
  public Row createAccumulator() {
    return new Row(1);
  }

  public void accumulate(Row acc, Object value) {
    if (value != null && acc.getField(0) == null) {
      acc.setField(0, value);
    }
  }

  public void merge(Row acc, Iterable<Row> others) {
    for (Row other : others) {
      if (acc.getField(0) != null) {
        return;
      }
      acc.setField(0, other.getField(0));
    }
  }

  public void resetAccumulator(Row acc) {
    acc.setField(0, null);
  }

  @Override
  public Object getValue(Row acc) {
    return acc.getField(0);
  }
}
